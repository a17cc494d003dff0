//! The peer book's tests: budgets, backoff, merging, bounds, and what a
//! complete node dials.

use super::*;

fn t(s: u64) -> Time {
    Time::from_millis(s * 1000)
}

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + n))
}

fn node(n: u8) -> NodeId {
    [n; 32]
}

fn cfg() -> BookConfig {
    BookConfig {
        max_peers: 3,
        max_connections: 5,
        max_dialing: 2,
        backoff_base: Duration::from_secs(2),
        backoff_max: Duration::from_secs(16),
        max_retries: 3,
        forget_after: Duration::from_secs(100),
        stable_after: Duration::from_secs(60),
        max_known: 10,
    }
}

#[test]
fn a_complete_node_dials_tracker_listings_and_what_it_is_asked_to_only() {
    let mut b = PeerBook::new(cfg(), node(0));
    let mut rng = Rng::new(1);
    let pex = |n: u8| PeerAddr {
        node_id: node(n),
        addrs: vec![addr(u16::from(n))],
    };
    b.add_pex(t(0), &[pex(1), pex(2)]);
    b.set_complete(true);
    assert!(b.poll_dials(t(0), &mut rng).is_empty(), "PEX nodes wait");
    assert_eq!(b.poll_timeout(), None);
    // Others may still dial in.
    assert!(b.accepts_inbound(0));
    // A tracker's listing is dialled.
    b.add_addrs(t(1), &[addr(3)]);
    assert_eq!(b.poll_timeout(), Some(t(1)));
    let d = b.poll_dials(t(1), &mut rng);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].target, Target::Addr(addr(3)));
    // So is a node someone asks for by name, once.
    b.retry_now(t(2), Target::Node(node(2)));
    let d = b.poll_dials(t(2), &mut rng);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].target, Target::Node(node(2)));
    b.dial_failed(t(2), d[0].target, &mut rng);
    assert!(
        b.poll_dials(t(60), &mut rng).is_empty(),
        "asked once, not for good"
    );
    b.set_complete(false);
    assert_eq!(
        b.poll_dials(t(60), &mut rng).len(),
        1,
        "one dial slot is busy"
    );
}

/// A tracker tells a leecher of seeds too, so what it listed before we
/// completed may be a seed: once complete we wait until an answer lists
/// it again (an answer to a seeder lists only leechers).
#[test]
fn a_complete_node_dials_only_addresses_listed_since_it_completed() {
    let mut b = PeerBook::new(cfg(), node(0));
    let mut rng = Rng::new(1);
    b.add_addrs(t(0), &[addr(1), addr(2)]);
    b.set_complete(true);
    assert!(
        b.poll_dials(t(0), &mut rng).is_empty(),
        "listed while we were a leecher"
    );
    assert_eq!(b.poll_timeout(), None);
    // Listed again now: a leecher, dialled; the other still waits.
    b.add_addrs(t(1), &[addr(2), addr(3)]);
    let mut got: Vec<Target> = b
        .poll_dials(t(1), &mut rng)
        .into_iter()
        .map(|d| d.target)
        .collect();
    got.sort();
    assert_eq!(got, vec![Target::Addr(addr(2)), Target::Addr(addr(3))]);
    assert_eq!(b.poll_timeout(), None, "{:?} still waits", addr(1));
    // Incomplete again (a piece went bad): everything is fair game. (One
    // dial fails first, to free a dialling slot; it backs off.)
    b.dial_failed(t(2), Target::Addr(addr(3)), &mut rng);
    b.set_complete(false);
    let d = b.poll_dials(t(2), &mut rng);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].target, Target::Addr(addr(1)));
}

#[test]
fn inbound_is_refused_at_the_connection_bound_and_let_in_again_below_it() {
    let mut b = PeerBook::new(cfg(), node(0));
    let mut rng = Rng::new(1);
    b.add_addrs(t(0), &[addr(1), addr(2)]);
    let dials = b.poll_dials(t(0), &mut rng);
    assert_eq!(dials.len(), 2);
    // Two dials in flight count: three more connections fit.
    assert!(b.accepts_inbound(0));
    assert!(b.accepts_inbound(2));
    assert!(!b.accepts_inbound(3), "handshakes count too");
    for n in 10..13 {
        assert!(b.accepts_inbound(0));
        b.connected_to(t(1), node(n));
    }
    assert!(
        !b.accepts_inbound(0),
        "3 inbound + 2 dials = max_connections"
    );
    // A dial that fails frees its place.
    b.dial_failed(t(2), dials[0].target, &mut rng);
    assert!(b.accepts_inbound(0));
    b.connected_to(t(2), node(13));
    assert!(!b.accepts_inbound(0));
    b.disconnected(t(3), node(10), Ending::Dropped, &mut rng);
    assert!(b.accepts_inbound(0));
}

#[test]
fn dials_within_the_budget() {
    let mut b = PeerBook::new(cfg(), node(0));
    let mut rng = Rng::new(1);
    b.add_addrs(t(0), &[addr(1), addr(2), addr(3), addr(4)]);
    let d = b.poll_dials(t(0), &mut rng);
    assert_eq!(d.len(), 2, "max_dialing");
    assert!(d.iter().all(|d| d.node_id.is_none()));
    assert!(b.poll_dials(t(0), &mut rng).is_empty());
    assert_eq!(b.poll_timeout(), None, "no dial slot free");
    // Two connect: one slot left under max_peers = 3.
    for (i, dial) in d.iter().enumerate() {
        let n = node(i as u8 + 1);
        let named = b.dial_identified(t(1), dial.target, n, dial.addr);
        assert_eq!(named, Target::Node(n));
        b.connected_to(t(1), n);
    }
    assert_eq!(b.connected(), 2);
    assert_eq!(b.poll_dials(t(1), &mut rng).len(), 1);
    assert!(b.poll_dials(t(1), &mut rng).is_empty());
}

#[test]
fn failures_back_off_exponentially_then_give_up() {
    let mut b = PeerBook::new(cfg(), node(0));
    let mut rng = Rng::new(7);
    b.add_addrs(t(0), &[addr(1)]);
    let mut now = t(0);
    let mut waits = Vec::new();
    for _ in 0..3 {
        let d = b.poll_dials(now, &mut rng);
        assert_eq!(d.len(), 1);
        b.dial_failed(now, d[0].target, &mut rng);
        let next = b.poll_timeout().expect("retry scheduled");
        assert!(
            b.poll_dials(now, &mut rng).is_empty(),
            "not before the backoff"
        );
        waits.push(next.saturating_since(now));
        now = next;
    }
    // Jittered into [full/2, full): 2 s, 4 s, 8 s.
    for (w, full) in waits.iter().zip([2u64, 4, 8]) {
        assert!(
            *w >= Duration::from_secs(full) / 2 && *w < Duration::from_secs(full),
            "{waits:?}"
        );
    }
    let d = b.poll_dials(now, &mut rng);
    b.dial_failed(now, d[0].target, &mut rng);
    assert_eq!(b.poll_timeout(), None, "given up after max_retries");
    assert!(b.poll_dials(t(1000), &mut rng).is_empty());
    // Listed again after forget_after: tried afresh.
    b.add_addrs(t(200), &[addr(1)]);
    b.expire(t(200));
    assert_eq!(b.poll_dials(t(200), &mut rng).len(), 1);
}

#[test]
fn backoff_is_capped() {
    let b = PeerBook::new(cfg(), node(0));
    let mut rng = Rng::new(3);
    for f in 1..40 {
        assert!(b.backoff(f, &mut rng) < Duration::from_secs(16));
    }
}

#[test]
fn banned_and_self_are_never_redialled() {
    let mut b = PeerBook::new(cfg(), node(0));
    let mut rng = Rng::new(2);
    b.add_addrs(t(0), &[addr(1), addr(2)]);
    let d = b.poll_dials(t(0), &mut rng);
    for dial in &d {
        let (n, why) = if dial.addr == addr(1) {
            (node(0), Refusal::Itself)
        } else {
            (node(9), Refusal::Banned)
        };
        b.dial_refused(t(0), dial.target, n, dial.addr, why);
    }
    assert!(b.is_banned(&node(9)));
    // Relisted by the tracker and by PEX: still nothing to dial.
    b.add_addrs(t(1), &[addr(1), addr(2)]);
    b.add_node(t(1), node(9), &[addr(2)]);
    b.add_node(t(1), node(0), &[addr(5)]);
    b.expire(t(500));
    assert!(b.poll_dials(t(500), &mut rng).is_empty());
    assert_eq!(b.len(), 1, "only the ban is kept");
}

#[test]
fn an_explicit_dial_skips_the_backoff_but_not_a_ban() {
    let mut b = PeerBook::new(cfg(), node(0));
    let mut rng = Rng::new(8);
    b.add_node(t(0), node(1), &[addr(1)]);
    let d = b.poll_dials(t(0), &mut rng);
    b.dial_failed(t(0), d[0].target, &mut rng);
    assert!(b.poll_dials(t(0), &mut rng).is_empty());
    b.retry_now(t(0), Target::Node(node(1)));
    assert_eq!(b.poll_dials(t(0), &mut rng).len(), 1);
    b.ban(t(0), node(1));
    b.retry_now(t(0), Target::Node(node(1)));
    assert!(b.poll_dials(t(100), &mut rng).is_empty());
}

#[test]
fn a_drop_is_retried_and_a_ban_is_not() {
    let mut b = PeerBook::new(cfg(), node(0));
    let mut rng = Rng::new(5);
    b.add_node(t(0), node(1), &[addr(1)]);
    b.add_node(t(0), node(2), &[addr(2)]);
    for d in b.poll_dials(t(0), &mut rng) {
        assert!(d.node_id.is_some());
        let n = d.node_id.unwrap();
        assert_eq!(b.dial_identified(t(0), d.target, n, d.addr), d.target);
        b.connected_to(t(0), n);
    }
    b.disconnected(t(100), node(1), Ending::Dropped, &mut rng);
    b.disconnected(t(100), node(2), Ending::Banned, &mut rng);
    let d = b.poll_dials(t(105), &mut rng);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].node_id, Some(node(1)));
    assert_eq!(d[0].addr, addr(1));
}

#[test]
fn tracker_address_merges_into_the_node_it_turns_out_to_be() {
    let mut b = PeerBook::new(cfg(), node(0));
    let mut rng = Rng::new(4);
    // Connected inbound, address learned later by PEX.
    b.connected_to(t(0), node(1));
    b.add_addrs(t(0), &[addr(1)]);
    let d = b.poll_dials(t(0), &mut rng);
    assert_eq!(d.len(), 1);
    b.dial_refused(t(0), d[0].target, node(1), d[0].addr, Refusal::Duplicate);
    assert_eq!(b.len(), 1);
    assert_eq!(b.connected(), 1, "the inbound connection is untouched");
    assert_eq!(b.addrs(&node(1)), &[addr(1)]);
    // The tracker lists it again: it is known under the node now.
    b.add_addrs(t(1), &[addr(1)]);
    assert_eq!(b.len(), 1);
    assert!(b.poll_dials(t(1), &mut rng).is_empty());
}

#[test]
fn pex_lists_connected_peers_with_addresses_only() {
    let mut b = PeerBook::new(cfg(), node(0));
    b.connected_to(t(0), node(1));
    b.connected_to(t(0), node(2));
    b.add_node(t(0), node(2), &[addr(2)]);
    b.add_node(t(0), node(3), &[addr(3)]);
    b.connected_to(t(0), node(4));
    b.add_node(
        t(0),
        node(4),
        &[addr(4), SocketAddr::from(([0, 0, 0, 0], 9))],
    );
    let l = b.connected_peers(&node(4));
    assert_eq!(
        l,
        vec![PeerAddr {
            node_id: node(2),
            addrs: vec![addr(2)]
        }]
    );
    assert_eq!(b.addrs(&node(4)), &[addr(4)], "unspecified dropped");
}

#[test]
fn stays_bounded() {
    let mut b = PeerBook::new(cfg(), node(0));
    let many: Vec<SocketAddr> = (1..100).map(addr).collect();
    b.add_addrs(t(0), &many);
    for i in 1..100 {
        b.add_node(t(0), node(i), &many);
    }
    assert_eq!(b.len(), 10);
    assert!(b.entries.values().all(|e| e.addrs.len() <= MAX_PEER_ADDRS));
    b.expire(t(1000));
    assert!(b.is_empty(), "nothing listed for forget_after");
}

#[test]
fn an_identified_dial_is_refused_for_a_ban_before_a_duplicate() {
    assert_eq!(Refusal::of_identified(true, true), Some(Refusal::Banned));
    assert_eq!(Refusal::of_identified(true, false), Some(Refusal::Banned));
    assert_eq!(
        Refusal::of_identified(false, true),
        Some(Refusal::Duplicate)
    );
    assert_eq!(Refusal::of_identified(false, false), None);
}

#[test]
fn a_dial_the_dialers_own_swarm_refuses_is_a_ban_or_a_duplicate() {
    use crate::swarm::{PeerKey, SwarmError};
    let k = PeerKey(3);
    assert_eq!(Refusal::of_swarm(&SwarmError::Banned(k)), Refusal::Banned);
    assert_eq!(
        Refusal::of_swarm(&SwarmError::DuplicatePeer(k)),
        Refusal::Duplicate
    );
}

#[test]
fn a_refused_dial_closes_with_the_code_that_names_why() {
    use crate::wire::CloseCode;
    assert_eq!(CloseCode::from(Refusal::Itself), CloseCode::SelfConnection);
    assert_eq!(CloseCode::from(Refusal::Duplicate), CloseCode::Duplicate);
    assert_eq!(CloseCode::from(Refusal::Banned), CloseCode::Banned);
}
