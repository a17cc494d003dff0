//! The locality rules of `near.rs`, one at a time.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::swarm::{BlockOutcome, BlockRef, PeerKey, Swarm, SwarmConfig};

use super::util::{bits, cfg, drain, geo, requests, slots, t, A, B, KB16};

const C: PeerKey = PeerKey(3);
const D: PeerKey = PeerKey(4);

const NEAR: Duration = Duration::from_millis(1);
const FAR: Duration = Duration::from_millis(40);

/// A leecher of `n` one-block pieces holding none, asking one block per
/// peer at a time.
fn leecher(n: u32, c: SwarmConfig) -> Swarm {
    let c = SwarmConfig {
        min_queue_blocks: 1,
        max_queue_blocks: 1,
        ..c
    };
    Swarm::new(geo(n, KB16), &bits(n, []), c, 7).unwrap()
}

/// Connects `k` at round trip `rtt` (if any) holding `has`.
fn join(s: &mut Swarm, k: PeerKey, rtt: Option<Duration>, n: u32, has: &[u32]) {
    s.handle_peer_connected(t(0), k, true).unwrap();
    if let Some(r) = rtt {
        s.handle_path_rtt(t(0), k, r).unwrap();
    }
    s.handle_bitfield(t(0), k, &bits(n, has.iter().copied()))
        .unwrap();
}

fn pieces(r: &[BlockRef]) -> BTreeSet<u32> {
    r.iter().map(|b| b.piece).collect()
}

/// Delivers every requested block of `r` from `from` and stores its
/// piece (one block per piece).
fn deliver(s: &mut Swarm, now: u64, from: PeerKey, r: &[BlockRef]) {
    for &b in r {
        assert_eq!(
            s.handle_block(t(now), from, b).unwrap(),
            BlockOutcome::Accepted
        );
        s.handle_piece_verified(t(now), b.piece, true).unwrap();
        s.handle_piece_stored(t(now), b.piece).unwrap();
    }
}

#[test]
fn a_far_peer_is_asked_only_for_what_no_near_unchoker_has() {
    let n = 6;
    let mut s = leecher(n, cfg());
    join(&mut s, A, Some(NEAR), n, &[0, 1, 2]);
    join(&mut s, B, Some(FAR), n, &[0, 1, 2, 3, 4, 5]);
    assert!(s.peer_info(t(0), B).unwrap().far);
    assert!(!s.peer_info(t(0), A).unwrap().far);
    s.handle_choked(t(1), A, false).unwrap();
    s.handle_choked(t(1), B, false).unwrap();
    let mut got = BTreeSet::new();
    // Six rounds of one block from each: B only ever serves 3, 4 and 5.
    for round in 0..6 {
        let a = drain(&mut s);
        let (ra, rb) = (requests(&a, A), requests(&a, B));
        assert!(
            pieces(&rb).iter().all(|p| *p >= 3),
            "round {round}: far B asked for {:?}, which near A has",
            pieces(&rb)
        );
        got.extend(pieces(&ra));
        got.extend(pieces(&rb));
        deliver(&mut s, 2 + round, A, &ra);
        deliver(&mut s, 2 + round, B, &rb);
    }
    assert_eq!(got, (0..n).collect(), "every piece arrived");
    assert!(s.is_complete());
}

#[test]
fn a_near_peer_that_chokes_us_or_leaves_does_not_hold_the_far_one_back() {
    let n = 4;
    let mut s = leecher(n, cfg());
    join(&mut s, A, Some(NEAR), n, &[0, 1, 2, 3]);
    join(&mut s, B, Some(FAR), n, &[0, 1, 2, 3]);
    // A chokes us (never unchoked): B may be asked for anything.
    s.handle_choked(t(1), B, false).unwrap();
    assert_eq!(requests(&drain(&mut s), B).len(), 1);
    // A unchokes: B finishes nothing new while A offers everything.
    let mut s = leecher(n, cfg());
    join(&mut s, A, Some(NEAR), n, &[0, 1, 2, 3]);
    join(&mut s, B, Some(FAR), n, &[0, 1, 2, 3]);
    s.handle_choked(t(1), A, false).unwrap();
    s.handle_choked(t(1), B, false).unwrap();
    let a = drain(&mut s);
    assert_eq!(requests(&a, A).len(), 1);
    assert!(
        requests(&a, B).is_empty(),
        "far B asked while near A has all"
    );
    // A leaves: B is asked at once, without waiting for another input.
    s.handle_peer_disconnected(t(2), A);
    let rb = requests(&drain(&mut s), B);
    assert_eq!(rb.len(), 1, "far B not asked after near A left");
}

#[test]
fn without_a_round_trip_or_a_threshold_every_peer_is_near() {
    let n = 2;
    for (rtt, c) in [
        (None, cfg()),
        (
            Some(FAR),
            SwarmConfig {
                far_rtt: None,
                ..cfg()
            },
        ),
    ] {
        let mut s = leecher(n, c);
        join(&mut s, A, Some(NEAR), n, &[0, 1]);
        join(&mut s, B, rtt, n, &[0, 1]);
        s.handle_choked(t(1), A, false).unwrap();
        s.handle_choked(t(1), B, false).unwrap();
        let a = drain(&mut s);
        assert!(!s.peer_info(t(1), B).unwrap().far);
        assert_eq!(requests(&a, B).len(), 1, "B is near here ({rtt:?})");
    }
}

#[test]
fn the_smallest_round_trip_decides() {
    let mut s = leecher(2, cfg());
    s.handle_peer_connected(t(0), A, true).unwrap();
    s.handle_path_rtt(t(0), A, Duration::from_millis(50))
        .unwrap();
    assert!(s.peer_info(t(0), A).unwrap().far);
    // Queueing later on inflates the estimate: the peer stays near once a
    // short round trip was seen.
    s.handle_path_rtt(t(1), A, NEAR).unwrap();
    s.handle_path_rtt(t(2), A, Duration::from_millis(80))
        .unwrap();
    let info = s.peer_info(t(2), A).unwrap();
    assert!(!info.far);
    assert_eq!(info.path_rtt, Some(NEAR));
    assert!(s.handle_path_rtt(t(3), B, NEAR).is_err(), "unknown peer");
}

#[test]
fn far_pieces_in_flight_are_capped() {
    // Pieces of four blocks, one block per peer at a time: each far peer
    // that gets a request owns a piece with blocks still open.
    let n = 8;
    for cap in [1u32, 2, 3] {
        let c = SwarmConfig {
            far_partials: cap,
            min_queue_blocks: 1,
            max_queue_blocks: 1,
            ..cfg()
        };
        let mut s = Swarm::new(geo(n, 4 * KB16), &bits(n, []), c, 7).unwrap();
        // A near peer with nothing yet: the region we will trade in.
        join(&mut s, PeerKey(9), Some(NEAR), n, &[]);
        for k in [A, B, C, D] {
            join(&mut s, k, Some(FAR), n, &(0..n).collect::<Vec<_>>());
            s.handle_choked(t(1), k, false).unwrap();
        }
        let a = drain(&mut s);
        let asked = [A, B, C, D]
            .iter()
            .filter(|&&k| !requests(&a, k).is_empty())
            .count();
        assert_eq!(asked, cap as usize, "far_partials {cap}");
        let p: BTreeSet<u32> = [A, B, C, D]
            .iter()
            .flat_map(|&k| pieces(&requests(&a, k)))
            .collect();
        assert_eq!(p.len(), cap as usize, "distinct pieces in flight");
        // It leaves: with nobody near to trade with, every far peer is
        // asked.
        s.handle_peer_disconnected(t(2), PeerKey(9));
        let a = drain(&mut s);
        for k in [A, B, C, D] {
            let asked = s.peer_info(t(2), k).unwrap().outstanding_requests;
            assert_eq!(
                asked, 1,
                "{k:?} with no near peer, far_partials {cap}: {a:?}"
            );
        }
    }
}

#[test]
fn a_near_peer_takes_over_a_piece_a_far_peer_is_fetching() {
    let n = 2;
    let c = SwarmConfig {
        min_queue_blocks: 1,
        max_queue_blocks: 1,
        ..cfg()
    };
    let mut s = Swarm::new(geo(n, 4 * KB16), &bits(n, []), c, 7).unwrap();
    join(&mut s, B, Some(FAR), n, &[0, 1]);
    s.handle_choked(t(1), B, false).unwrap();
    let rb = requests(&drain(&mut s), B);
    assert_eq!(rb.len(), 1);
    let piece = rb[0].piece;
    // A near peer with both pieces unchokes us: it adopts B's piece
    // rather than starting the other one.
    join(&mut s, A, Some(NEAR), n, &[0, 1]);
    s.handle_choked(t(2), A, false).unwrap();
    let ra = requests(&drain(&mut s), A);
    assert_eq!(pieces(&ra), BTreeSet::from([piece]));
    // B's block arrives: B is asked for nothing more (A has it all).
    assert_eq!(
        s.handle_block(t(3), B, rb[0]).unwrap(),
        BlockOutcome::Accepted
    );
    assert!(requests(&drain(&mut s), B).is_empty());
}

#[test]
fn a_leecher_fills_free_slots_with_one_far_peer_at_most() {
    let n = 4;
    let mut s = Swarm::new(geo(n, KB16), &bits(n, [0]), cfg(), 7).unwrap();
    for (k, rtt) in [(B, FAR), (C, FAR), (D, FAR), (A, NEAR)] {
        s.handle_peer_connected(t(0), k, false).unwrap();
        s.handle_path_rtt(t(0), k, rtt).unwrap();
        s.handle_have_none(t(0), k).unwrap();
    }
    for k in [B, C, D, A] {
        s.handle_interested(t(1), k, true).unwrap();
    }
    drain(&mut s);
    assert!(s.is_unchoked(B), "the first far peer to ask gets a slot");
    assert!(!s.is_unchoked(C) && !s.is_unchoked(D));
    assert!(s.is_unchoked(A), "a near peer gets a free slot");
    // B loses interest: the far slot goes to the next far peer.
    s.handle_interested(t(2), B, false).unwrap();
    assert!(!s.is_unchoked(B));
    assert_eq!(
        [C, D].iter().filter(|&&k| s.is_unchoked(k)).count(),
        1,
        "one far peer again"
    );
    // With no near peer left, nobody near could want the free slots.
    s.handle_peer_disconnected(t(3), A);
    s.handle_interested(t(4), B, true).unwrap();
    assert!([B, C, D].iter().all(|&k| s.is_unchoked(k)));
}

/// Between rounds the optimistic share goes to a peer we never served
/// (`choke.rs`), but to a far one only when no far peer holds a slot.
#[test]
fn a_newcomer_takes_the_optimistic_share_only_within_the_far_budget() {
    let n = 4;
    let mut s = Swarm::new(geo(n, KB16), &bits(n, [0]), slots(1, 0), 7).unwrap();
    let come = |s: &mut Swarm, now: u64, k: PeerKey, rtt: Duration| {
        s.handle_peer_connected(t(now), k, false).unwrap();
        s.handle_path_rtt(t(now), k, rtt).unwrap();
        s.handle_have_none(t(now), k).unwrap();
        s.handle_interested(t(now), k, true).unwrap();
    };
    come(&mut s, 0, A, NEAR);
    come(&mut s, 0, B, FAR);
    assert!(s.is_unchoked(A) && s.is_unchoked(B));
    // Both take a piece from us.
    for k in [A, B] {
        let b = BlockRef {
            piece: 0,
            offset: 0,
            len: KB16,
        };
        s.handle_request(t(100), k, b).unwrap();
        s.handle_bytes_sent(t(100), k, u64::from(KB16));
    }
    come(&mut s, 200, C, FAR);
    s.handle_timeout(t(250));
    assert!(!s.is_unchoked(C), "far B holds a slot: far C waits");
    assert!(s.is_unchoked(A) && s.is_unchoked(B));
    come(&mut s, 300, D, NEAR);
    s.handle_timeout(t(500));
    assert!(s.is_unchoked(D), "a near newcomer takes the share");
    assert_eq!([A, B].iter().filter(|&&k| s.is_unchoked(k)).count(), 1);
    assert!(!s.is_unchoked(C));
}

#[test]
fn bad_locality_settings_are_refused() {
    for c in [
        SwarmConfig {
            far_rtt: Some(Duration::ZERO),
            ..SwarmConfig::default()
        },
        SwarmConfig {
            far_partials: 0,
            ..SwarmConfig::default()
        },
    ] {
        assert!(c.validate().is_err(), "{c:?}");
    }
}

#[test]
fn a_near_peer_that_refuses_a_piece_no_longer_holds_the_far_one_back() {
    let n = 2;
    let mut s = leecher(n, cfg());
    join(&mut s, A, Some(NEAR), n, &[0, 1]);
    join(&mut s, B, Some(FAR), n, &[0, 1]);
    s.handle_choked(t(1), A, false).unwrap();
    s.handle_choked(t(1), B, false).unwrap();
    let a = drain(&mut s);
    assert!(requests(&a, B).is_empty());
    let ra = requests(&a, A);
    assert_eq!(ra.len(), 1);
    // A announced the piece but will not serve it: B is asked for it, or
    // the piece would wait for A until it chokes us or leaves.
    s.handle_reject(t(2), A, ra[0]).unwrap();
    let rb = requests(&drain(&mut s), B);
    assert_eq!(pieces(&rb), BTreeSet::from([ra[0].piece]));
}

/// Random inputs from near and far peers (announcements, chokes, rejects,
/// blocks, departures, round trips); after each, the running near counts
/// equal a recount.
#[test]
fn near_counts_survive_random_inputs() {
    let n = 400;
    let mut rng = crate::rng::Rng::new(11);
    let c = SwarmConfig {
        min_queue_blocks: 2,
        max_queue_blocks: 4,
        ..cfg()
    };
    let mut s = Swarm::new(geo(n, 2 * KB16), &bits(n, []), c, 3).unwrap();
    let keys: Vec<PeerKey> = (1..=8).map(PeerKey).collect();
    let mut pending: Vec<(PeerKey, BlockRef)> = Vec::new();
    let (mut blocks, mut rejects, mut far_seen) = (0, 0, 0);
    for step in 0..6000u64 {
        let now = t(step);
        let k = keys[rng.below(keys.len() as u64) as usize];
        if !s.peers().any(|p| p == k) {
            pending.retain(|(p, _)| *p != k);
            let _ = s.handle_peer_connected(now, k, true);
            if rng.below(3) > 0 {
                let ms = [1, 5, 20, 60][rng.below(4) as usize];
                let _ = s.handle_path_rtt(now, k, Duration::from_millis(ms));
            }
            let _ = match rng.below(4) {
                0 => s.handle_have_all(now, k),
                1 => s.handle_have_none(now, k),
                _ => {
                    let has: Vec<u32> = (0..n).filter(|_| rng.below(2) == 0).collect();
                    s.handle_bitfield(now, k, &bits(n, has))
                }
            };
        } else {
            match rng.below(10) {
                0 => {
                    let _ = s.handle_have(now, k, rng.below(u64::from(n)) as u32);
                }
                1 => {
                    let _ = s.handle_choked(now, k, rng.below(3) == 0);
                }
                2 => s.handle_peer_disconnected(now, k),
                3 => {
                    let ms = 1 + rng.below(60);
                    let _ = s.handle_path_rtt(now, k, Duration::from_millis(ms));
                }
                _ => {
                    // Answer its oldest request: a block, or a reject.
                    if let Some(i) = pending.iter().position(|(p, _)| *p == k) {
                        let (_, b) = pending.remove(i);
                        if rng.below(4) == 0 {
                            rejects += 1;
                            let _ = s.handle_reject(now, k, b);
                        } else {
                            blocks += 1;
                            s.handle_bytes_received(now, k, u64::from(b.len));
                            let _ = s.handle_block(now, k, b);
                        }
                    }
                }
            }
        }
        while let Some(a) = s.poll_action() {
            match a {
                crate::swarm::Action::Send {
                    peer,
                    message: crate::swarm::Message::Request(b),
                } => pending.push((peer, b)),
                crate::swarm::Action::Send {
                    peer,
                    message: crate::swarm::Message::Cancel(b),
                } => pending.retain(|x| *x != (peer, b)),
                crate::swarm::Action::VerifyPiece { piece } => {
                    s.handle_piece_verified(now, piece, true).unwrap();
                    s.handle_piece_stored(now, piece).unwrap();
                }
                _ => {}
            }
        }
        far_seen += s
            .peers()
            .filter(|&p| s.peer_info(now, p).is_some_and(|i| i.far))
            .count();
        s.check_near();
    }
    // The walk went where it had to.
    assert!(
        blocks > 400 && !s.is_complete() && rejects > 100 && far_seen > 1000,
        "{blocks} {rejects} {far_seen} {}",
        s.stats().have_pieces
    );
}
