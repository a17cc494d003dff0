//! Single-swarm tests: the machine driven by hand, one policy at a time.

use std::time::Duration;

use crate::swarm::{
    Action, BlockOutcome, BlockRef, DisconnectReason, Message, PeerKey, Swarm, SwarmConfig,
    SwarmError, Time, Violation,
};

use super::util::{bits, cfg, drain, geo, msgs_to, requests, slots, t, A, B, KB16};

const C: PeerKey = PeerKey(3);

/// Completes `piece` (one block of 16 KiB) as if `from` sent it.
fn deliver_piece(s: &mut Swarm, now: Time, from: PeerKey, piece: u32) {
    let b = BlockRef {
        piece,
        offset: 0,
        len: KB16,
    };
    assert_eq!(
        s.handle_block(now, from, b).unwrap(),
        BlockOutcome::Accepted
    );
    s.handle_piece_verified(now, piece, true).unwrap();
    s.handle_piece_stored(now, piece).unwrap();
}

/// A seed's 250 ms of upload: every unchoked one of `peers` asks for a
/// block of `piece` and takes `sent(peer)` bytes of it; then the timer.
fn serve_tick(
    s: &mut Swarm,
    now: u64,
    peers: &[PeerKey],
    piece: u32,
    sent: impl Fn(PeerKey) -> u32,
) {
    for &k in peers {
        if s.is_unchoked(k) {
            let b = BlockRef {
                piece,
                offset: 0,
                len: KB16,
            };
            s.handle_request(t(now), k, b).unwrap();
            s.handle_bytes_sent(t(now), k, u64::from(sent(k)));
        }
    }
    s.handle_timeout(t(now));
}

#[test]
fn rarest_first_picks_the_rarest_piece() {
    let n = 10;
    let c = SwarmConfig {
        random_first_pieces: 0,
        min_queue_blocks: 1,
        max_queue_blocks: 1,
        ..cfg()
    };
    let mut s = Swarm::new(geo(n, KB16), &bits(n, []), c, 1).unwrap();
    for k in [A, B, C] {
        s.handle_peer_connected(t(0), k, true).unwrap();
    }
    // Piece 0 only at A, piece 1 at A and B, the rest everywhere.
    s.handle_bitfield(t(1), A, &bits(n, 0..n - 1)).unwrap();
    s.handle_have(t(1), A, n - 1).unwrap();
    s.handle_bitfield(t(1), B, &bits(n, 1..n)).unwrap();
    s.handle_bitfield(t(1), C, &bits(n, 2..n)).unwrap();
    drain(&mut s);
    s.handle_choked(t(2), A, false).unwrap();
    let r = requests(&drain(&mut s), A);
    assert_eq!(r.iter().map(|b| b.piece).collect::<Vec<_>>(), vec![0]);
    deliver_piece(&mut s, t(3), A, 0);
    let r = requests(&drain(&mut s), A);
    assert_eq!(r.iter().map(|b| b.piece).collect::<Vec<_>>(), vec![1]);
    // C has neither 0 nor 1: it gets one of the equally rare rest.
    s.handle_choked(t(4), C, false).unwrap();
    let r = requests(&drain(&mut s), C);
    assert_eq!(r.len(), 1);
    assert!(r[0].piece >= 2);
}

#[test]
fn first_pieces_are_random_then_rarest() {
    let n = 64;
    let mut firsts = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let c = SwarmConfig {
            random_first_pieces: 1,
            min_queue_blocks: 1,
            max_queue_blocks: 1,
            ..cfg()
        };
        let mut s = Swarm::new(geo(n, KB16), &bits(n, []), c, seed).unwrap();
        s.handle_peer_connected(t(0), A, true).unwrap();
        s.handle_peer_connected(t(0), B, true).unwrap();
        s.handle_have_all(t(0), A).unwrap();
        // B makes piece 7 the only piece held by a single peer... less
        // than the rest: everything but 7 is at B too.
        s.handle_bitfield(t(0), B, &bits(n, (0..n).filter(|&i| i != 7)))
            .unwrap();
        s.handle_choked(t(1), A, false).unwrap();
        let r = requests(&drain(&mut s), A);
        firsts.insert(r[0].piece);
        deliver_piece(&mut s, t(2), A, r[0].piece);
        // With one piece held, rarest-first takes over: piece 7.
        let r = requests(&drain(&mut s), A);
        if r[0].piece != 7 {
            panic!("seed {seed}: expected rarest piece 7, got {}", r[0].piece);
        }
    }
    assert!(firsts.len() > 5, "first pieces not random: {firsts:?}");
}

#[test]
fn endgame_duplicates_requests_and_cancels_the_loser() {
    // One piece of four blocks; each peer keeps two requests outstanding.
    let c = SwarmConfig {
        min_queue_blocks: 2,
        max_queue_blocks: 2,
        random_first_pieces: 0,
        ..cfg()
    };
    let mut s = Swarm::new(geo(1, 4 * KB16), &[0], c, 3).unwrap();
    for k in [A, B] {
        s.handle_peer_connected(t(0), k, true).unwrap();
        s.handle_have_all(t(0), k).unwrap();
    }
    s.handle_choked(t(1), A, false).unwrap();
    let ra = requests(&drain(&mut s), A);
    assert_eq!(
        ra.iter().map(|b| b.offset).collect::<Vec<_>>(),
        vec![0, KB16]
    );
    assert!(!s.stats().endgame);
    s.handle_choked(t(1), B, false).unwrap();
    let rb = requests(&drain(&mut s), B);
    assert_eq!(
        rb.iter().map(|b| b.offset / KB16).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(s.stats().endgame, "every block is requested");
    // A answers one: it has room, and in endgame it takes B's block 2.
    assert_eq!(
        s.handle_block(t(2), A, ra[0]).unwrap(),
        BlockOutcome::Accepted
    );
    let dup = requests(&drain(&mut s), A);
    assert_eq!(dup, vec![rb[0]]);
    // B delivers block 2 first: A's duplicate is cancelled.
    assert_eq!(
        s.handle_block(t(3), B, rb[0]).unwrap(),
        BlockOutcome::Accepted
    );
    let acts = drain(&mut s);
    let to_a = msgs_to(&acts, A);
    assert_eq!(to_a[0], Message::Cancel(rb[0]));
    // A's freed slot goes to the last block still in flight at B.
    assert_eq!(to_a[1..], [Message::Request(rb[1])]);
    // A late copy is a duplicate.
    assert_eq!(
        s.handle_block(t(4), A, rb[0]).unwrap(),
        BlockOutcome::Duplicate
    );
    s.handle_block(t(5), A, ra[1]).unwrap();
    s.handle_block(t(5), B, rb[1]).unwrap();
    let acts = drain(&mut s);
    assert!(acts.contains(&Action::VerifyPiece { piece: 0 }));
}

#[test]
fn choking_keeps_the_slots_and_reciprocates() {
    let n = 8;
    let c = SwarmConfig {
        unchoke_slots: 3,
        optimistic_slots: 1,
        ..cfg()
    };
    let mut s = Swarm::new(geo(n, KB16), &bits(n, 0..4), c, 9).unwrap();
    let peers: Vec<PeerKey> = (10..20).map(PeerKey).collect();
    for &k in &peers {
        s.handle_peer_connected(t(0), k, false).unwrap();
        s.handle_bitfield(t(0), k, &bits(n, 4..8)).unwrap();
        s.handle_interested(t(0), k, true).unwrap();
    }
    assert_eq!(s.stats().unchoked, 4, "free slots fill at once");
    let mut now = 0;
    while now < 60_000 {
        now += 250;
        // Peer 10 + i uploads to us at i × 100 KB/s.
        for (i, &k) in peers.iter().enumerate() {
            s.handle_bytes_received(t(now), k, i as u64 * 25_000);
        }
        s.handle_timeout(t(now));
        drain(&mut s);
        assert!(s.stats().unchoked <= 4);
    }
    assert_eq!(s.stats().unchoked, 4);
    // The three fastest uploaders hold the regular slots.
    for k in [PeerKey(17), PeerKey(18), PeerKey(19)] {
        assert!(s.is_unchoked(k), "{k} should be unchoked");
    }
    // A peer losing interest frees its slot for another at once.
    s.handle_interested(t(now), PeerKey(19), false).unwrap();
    assert!(!s.is_unchoked(PeerKey(19)));
    assert_eq!(s.stats().unchoked, 4);
}

/// Only a peer we upload to holds the optimistic share: one that gives
/// its slot back (it lost interest, say) gives the share back with it,
/// so that the share can be drawn afresh at the next round instead of
/// staying with a peer we choked.
#[test]
fn a_choked_peer_holds_no_optimistic_share() {
    let n = 8;
    let mut s = Swarm::new(geo(n, KB16), &bits(n, 0..4), slots(2, 0), 9).unwrap();
    let peers: Vec<PeerKey> = (10..16).map(PeerKey).collect();
    for &k in &peers {
        s.handle_peer_connected(t(0), k, false).unwrap();
        s.handle_bitfield(t(0), k, &bits(n, 4..8)).unwrap();
        s.handle_interested(t(0), k, true).unwrap();
    }
    let holds_only_unchoked = |s: &Swarm| s.optimistic.iter().all(|&k| s.is_unchoked(k));
    let mut now = 0;
    // Past the first round, so that the share is an optimistic pick.
    while now < 12_000 {
        now += 250;
        for (i, &k) in peers.iter().enumerate() {
            s.handle_bytes_received(t(now), k, i as u64 * 25_000);
        }
        serve_tick(&mut s, now, &peers, 0, |_| KB16);
        drain(&mut s);
        assert!(holds_only_unchoked(&s), "at {now}: {:?}", s.optimistic);
    }
    let x = *s
        .optimistic
        .first()
        .expect("the round picked an optimistic peer");
    assert!(s.is_unchoked(x));
    s.handle_interested(t(now), x, false).unwrap();
    drain(&mut s);
    assert!(
        !s.is_unchoked(x),
        "a peer that wants nothing gives its slot back"
    );
    assert!(
        !s.optimistic.contains(&x),
        "and the optimistic share with it"
    );
    // Interested again before anything else runs: whatever it gets back,
    // the share still rests only with peers we unchoke.
    s.handle_interested(t(now), x, true).unwrap();
    drain(&mut s);
    assert!(holds_only_unchoked(&s), "{:?}", s.optimistic);
}

/// A peer that comes after the slots filled gets the optimistic share
/// between rounds, from the peer holding it once that one has had a piece
/// from us. Before the first round the ranking holds that share; after it,
/// the optimistic pick. With no newcomer waiting, the share goes to a
/// peer we have not served for a rate window, so a peer choked early is
/// not shut out until the next round.
#[test]
fn a_late_peer_gets_the_optimistic_share_between_rounds() {
    let n = 8;
    let mut s = Swarm::new(geo(n, KB16), &bits(n, 0..4), slots(2, 0), 5).unwrap();
    // What each sends us per 250 ms: 10 fastest, the late ones slowest.
    let peers: Vec<(PeerKey, u64, u64)> = vec![
        (PeerKey(10), 0, 30_000),
        (PeerKey(11), 0, 20_000),
        (PeerKey(12), 0, 10_000),
        (PeerKey(13), 1_000, 5_000),
        (PeerKey(14), 11_000, 0),
    ];
    let mut chokes = Vec::new();
    let mut now = 0;
    while now <= 12_000 {
        let here: Vec<PeerKey> = peers.iter().filter(|p| p.1 <= now).map(|p| p.0).collect();
        for &(k, at, _) in &peers {
            if at == now {
                s.handle_peer_connected(t(now), k, false).unwrap();
                s.handle_bitfield(t(now), k, &bits(n, 4..8)).unwrap();
                s.handle_interested(t(now), k, true).unwrap();
                if now > 0 {
                    assert!(!s.is_unchoked(k), "every slot is taken at {now}");
                }
            }
        }
        // Each unchoked peer takes a piece from us, then the timer runs.
        serve_tick(&mut s, now, &here, 0, |_| KB16);
        for &(k, at, rate) in &peers {
            if at <= now {
                s.handle_bytes_received(t(now), k, rate);
            }
        }
        for a in drain(&mut s) {
            if let Action::Send {
                peer,
                message: Message::Choke,
            } = a
            {
                chokes.push((now, peer));
            }
        }
        assert!(s.stats().unchoked <= 3);
        if now == 1_000 {
            assert!(s.is_unchoked(PeerKey(13)), "the late peer waits");
            // The ranking held the share: its lowest made room.
            assert_eq!(chokes, [(1_000, PeerKey(12))]);
        }
        if now == 11_000 {
            // A peer never served goes before those served once.
            assert!(s.is_unchoked(PeerKey(14)), "the second late peer waits");
        }
        now += 250;
    }
    // Before the round the share goes back and forth between 12 and 13:
    // each gets it again once it has waited a rate window (2 s) and the
    // holder has had a piece. 10 and 11, the fastest, keep their slots.
    let before_round: Vec<(u64, PeerKey)> =
        chokes.iter().copied().filter(|c| c.0 < 10_000).collect();
    let (p12, p13) = (PeerKey(12), PeerKey(13));
    assert_eq!(
        before_round,
        [
            (1_000, p12),
            (3_000, p13),
            (5_000, p12),
            (7_000, p13),
            (9_000, p12)
        ]
    );
    assert!(
        chokes
            .iter()
            .all(|c| ![PeerKey(10), PeerKey(11)].contains(&c.1)),
        "{chokes:?}"
    );
}

/// A slot whose peer takes a small share of what the fastest takes (its
/// own path is the limit) opens one more; the extra slot closes at the
/// next choke round once no slot is thin.
#[test]
fn thin_slots_open_more_and_close_at_the_round() {
    let n = 16;
    let run = |max_thin_slots: usize| {
        let c = slots(2, max_thin_slots);
        let mut s = Swarm::new(geo(n, KB16), &bits(n, 0..n), c, 4).unwrap();
        let peers: Vec<PeerKey> = (10..18).map(PeerKey).collect();
        for &k in &peers {
            s.handle_peer_connected(t(0), k, false).unwrap();
            s.handle_bitfield(t(0), k, &bits(n, 0..8)).unwrap();
            s.handle_interested(t(0), k, true).unwrap();
        }
        // First come, first served: 10, 11 and 12.
        assert_eq!(s.stats().unchoked, 3);
        let (mut most, mut now) = (0, 0);
        let mut at = |s: &mut Swarm, until: u64, slow: &[PeerKey]| {
            while now < until {
                now += 250;
                // 64 KB/s, or 4 KB/s for a peer behind a slow path.
                serve_tick(s, now, &peers, 8, |k| {
                    if slow.contains(&k) {
                        1024
                    } else {
                        KB16
                    }
                });
                drain(s);
                most = most.max(s.stats().unchoked);
            }
            s.stats().unchoked
        };
        let early = at(&mut s, 5_000, &[PeerKey(12)]);
        // Every peer is fast now: nothing is thin, the round takes back
        // the extra slot.
        let late = at(&mut s, 12_000, &[]);
        (early, late, most)
    };
    assert_eq!(run(2), (4, 3, 4), "one thin slot opens one more");
    assert_eq!(run(0), (3, 3, 3), "the rule can be turned off");
}

/// A seed done spreading whose slots all went to slow peers furthest
/// behind gives its extra (thin) slots to the peers it lately uploaded to
/// fastest, not to more slow ones.
#[test]
fn a_seeds_extra_slots_go_to_peers_that_took_the_most_lately() {
    let n = 16;
    let run = |rule_applies: bool| {
        let c = slots(2, 2);
        let mut s = Swarm::new(geo(n, KB16), &bits(n, 0..n), c, 4).unwrap();
        // 10-12 are fast and ahead; they connect first and take the
        // first three slots. 13-17 are slow and far behind.
        let fast: Vec<PeerKey> = (10..13).map(PeerKey).collect();
        let slow: Vec<PeerKey> = (13..18).map(PeerKey).collect();
        let all: Vec<PeerKey> = fast.iter().chain(&slow).copied().collect();
        for &k in &all {
            let held = if fast.contains(&k) { 0..12 } else { 0..2 };
            s.handle_peer_connected(t(0), k, false).unwrap();
            s.handle_bitfield(t(0), k, &bits(n, held)).unwrap();
            s.handle_interested(t(0), k, true).unwrap();
        }
        assert!(fast.iter().all(|&k| s.is_unchoked(k)));
        let mut now = 0;
        while now < 14_000 {
            now += 250;
            // 64 KB/s to a fast peer, 4 KB/s to a slow one; with the rule
            // off (a throw-away measure) everyone is slow, so no slot is
            // thin and none is extra.
            serve_tick(&mut s, now, &all, 15, |k| {
                if fast.contains(&k) && rule_applies {
                    KB16
                } else {
                    1024
                }
            });
            drain(&mut s);
        }
        let unchoked_fast = fast.iter().filter(|&&k| s.is_unchoked(k)).count();
        let unchoked_slow = slow.iter().filter(|&&k| s.is_unchoked(k)).count();
        (unchoked_fast, unchoked_slow)
    };
    // The round at 10 s gave the three regular slots to slow peers (they
    // are furthest behind); theirs are thin, so two more open, for two
    // fast peers.
    assert_eq!(run(true), (2, 3));
    // Where every slot carries the same, nothing is thin: three slots,
    // all for the peers furthest behind.
    assert_eq!(run(false), (0, 3));
}

#[test]
fn a_seed_unchokes_the_peers_furthest_behind() {
    let n = 16;
    let c = SwarmConfig {
        spread_distinct: false,
        // Fewer slots than peers, so the ranking decides.
        unchoke_slots: 4,
        ..cfg()
    };
    let mut s = Swarm::new(geo(n, KB16), &bits(n, 0..n), c, 4).unwrap();
    // Peer 10 + i holds 15 - i pieces: the later, the further behind.
    let peers: Vec<PeerKey> = (10..18).map(PeerKey).collect();
    for (i, &k) in peers.iter().enumerate() {
        s.handle_peer_connected(t(0), k, false).unwrap();
        s.handle_bitfield(t(0), k, &bits(n, 0..15 - i as u32))
            .unwrap();
        s.handle_interested(t(0), k, true).unwrap();
    }
    // First come, first served until the round.
    assert!(s.is_unchoked(PeerKey(10)));
    let mut now = 0;
    while now < 10_250 {
        now += 250;
        // The unchoked fetch (a seed takes back an unused slot).
        serve_tick(&mut s, now, &peers, 15, |_| KB16);
    }
    let unchoked: Vec<PeerKey> = peers
        .iter()
        .copied()
        .filter(|&k| s.is_unchoked(k))
        .collect();
    assert_eq!(unchoked, (13..18).map(PeerKey).collect::<Vec<_>>());
}

#[test]
fn a_spreading_seed_reveals_distinct_pieces() {
    use std::collections::{BTreeMap, BTreeSet};
    let n = 12;
    let c = SwarmConfig {
        spread_ahead_bytes: u64::from(KB16),
        ..cfg()
    };
    let mut s = Swarm::new(geo(n, KB16), &bits(n, 0..n), c, 5).unwrap();
    let haves = |acts: &[Action], k: PeerKey| -> Vec<u32> {
        msgs_to(acts, k)
            .iter()
            .filter_map(|m| match m {
                Message::Have(p) => Some(*p),
                _ => None,
            })
            .collect()
    };
    let mut told: BTreeMap<PeerKey, Vec<u32>> = BTreeMap::new();
    for k in [A, B, C] {
        s.handle_peer_connected(t(0), k, false).unwrap();
        s.handle_have_none(t(0), k).unwrap();
        let acts = drain(&mut s);
        let m = msgs_to(&acts, k);
        assert_eq!(m[0], Message::HaveNone, "a spreading seed masks");
        assert!(m.contains(&Message::Unchoke), "and courts the peer");
        told.insert(k, haves(&acts, k));
    }
    assert!(told.values().all(|v| v.len() == 1));
    // Every peer fetches and announces what it was told; the seed keeps
    // revealing pieces nobody else was told, until every piece has landed
    // somewhere, and then tells everyone the rest.
    let mut landed = BTreeSet::new();
    let mut now = 1;
    loop {
        let mut progressed = false;
        for k in [A, B, C] {
            let todo: Vec<u32> = told[&k]
                .iter()
                .copied()
                .filter(|p| !landed.contains(p))
                .collect();
            for p in todo {
                now += 1;
                let b = BlockRef {
                    piece: p,
                    offset: 0,
                    len: KB16,
                };
                s.handle_request(t(now), k, b).unwrap();
                s.handle_have(t(now), k, p).unwrap();
                landed.insert(p);
                progressed = true;
                let acts = drain(&mut s);
                assert!(acts.contains(&Action::ServeBlock { peer: k, block: b }));
                for (&other, list) in told.iter_mut() {
                    let new = haves(&acts, other);
                    if landed.len() == n as usize {
                        // Unmasked: each peer hears of every piece it was
                        // not told.
                        assert_eq!(new.len() + list.len(), n as usize, "{other}");
                        return;
                    }
                    for q in new {
                        assert!(!landed.contains(&q), "piece {q} revealed twice");
                        list.push(q);
                    }
                }
                let all: Vec<u32> = told.values().flatten().copied().collect();
                let distinct: BTreeSet<u32> = all.iter().copied().collect();
                assert_eq!(all.len(), distinct.len(), "overlapping reveals {told:?}");
            }
        }
        assert!(progressed, "the seed stopped revealing: {told:?}");
    }
}

#[test]
fn a_shared_bad_piece_is_refetched_from_one_peer_and_blamed() {
    let c = SwarmConfig {
        min_queue_blocks: 1,
        max_queue_blocks: 1,
        random_first_pieces: 0,
        ..cfg()
    };
    let mut s = Swarm::new(geo(1, 2 * KB16), &[0], c, 11).unwrap();
    for k in [A, B] {
        s.handle_peer_connected(t(0), k, true).unwrap();
        s.handle_have_all(t(0), k).unwrap();
        s.handle_choked(t(0), k, false).unwrap();
    }
    let acts = drain(&mut s);
    let (ra, rb) = (requests(&acts, A), requests(&acts, B));
    assert_eq!((ra.len(), rb.len()), (1, 1), "both peers share the piece");
    s.handle_block(t(1), A, ra[0]).unwrap();
    s.handle_block(t(1), B, rb[0]).unwrap();
    assert!(drain(&mut s).contains(&Action::VerifyPiece { piece: 0 }));
    s.handle_piece_verified(t(2), 0, false).unwrap();
    let acts = drain(&mut s);
    assert_eq!(s.peer_score(A).unwrap().bad_pieces, 0.5);
    assert_eq!(s.peer_score(B).unwrap().bad_pieces, 0.5);
    assert!(!acts.iter().any(|a| matches!(a, Action::Disconnect { .. })));
    // The re-fetch is single-sourced: only one peer gets requests.
    let (ra, rb) = (requests(&acts, A), requests(&acts, B));
    assert_eq!(ra.len() + rb.len(), 1);
    let (who, first) = if ra.is_empty() {
        (B, rb[0])
    } else {
        (A, ra[0])
    };
    s.handle_block(t(3), who, first).unwrap();
    let more = requests(&drain(&mut s), who);
    assert_eq!(more.len(), 1);
    s.handle_block(t(3), who, more[0]).unwrap();
    drain(&mut s);
    // It fails again: the sole supplier is dropped and, at blame 1.5 < 2,
    // not banned yet.
    s.handle_piece_verified(t(4), 0, false).unwrap();
    let acts = drain(&mut s);
    assert!(acts.contains(&Action::Disconnect {
        peer: who,
        reason: DisconnectReason::BadData
    }));
    assert_eq!(s.peer_score(who).unwrap().bad_pieces, 1.5);
    assert!(!s.is_banned(who));
}

#[test]
fn a_stalling_peer_is_cancelled_snubbed_then_dropped() {
    let c = SwarmConfig {
        random_first_pieces: 0,
        max_stalls: 2,
        ..cfg()
    };
    let mut s = Swarm::new(geo(8, KB16), &bits(8, []), c.clone(), 2).unwrap();
    s.handle_peer_connected(t(0), A, true).unwrap();
    s.handle_have_all(t(0), A).unwrap();
    s.handle_choked(t(0), A, false).unwrap();
    let first = requests(&drain(&mut s), A);
    assert_eq!(first.len() as u32, c.min_queue_blocks);
    let mut now = 0;
    let mut stalls = Vec::new();
    while now < 120_000 {
        now += 250;
        s.handle_timeout(t(now));
        let acts = drain(&mut s);
        let cancels = msgs_to(&acts, A)
            .iter()
            .filter(|m| matches!(m, Message::Cancel(_)))
            .count();
        if cancels > 0 {
            stalls.push((now, cancels));
            // Snubbed: a single request in flight afterwards.
            assert!(requests(&acts, A).len() <= 1);
        }
        if acts.contains(&Action::Disconnect {
            peer: A,
            reason: DisconnectReason::Stalled,
        }) {
            break;
        }
    }
    assert_eq!(stalls.len(), 2, "{stalls:?}");
    assert_eq!(stalls[0].0, c.max_stall_timeout.as_millis() as u64 + 250);
    assert_eq!(stalls[0].1, first.len());
    assert!(s.peers().next().is_none());
    assert_eq!(s.peer_score(A).unwrap().stalls, 2);
}

#[test]
fn pipelines_follow_the_bandwidth_delay_product() {
    let c = SwarmConfig {
        random_first_pieces: 0,
        ..cfg()
    };
    let mut s = Swarm::new(geo(4096, KB16), &bits(4096, []), c.clone(), 2).unwrap();
    s.handle_peer_connected(t(0), A, true).unwrap();
    s.handle_have_all(t(0), A).unwrap();
    s.handle_choked(t(0), A, false).unwrap();
    let first = requests(&drain(&mut s), A);
    assert_eq!(first.len() as u32, c.min_queue_blocks);
    // The peer serves requests in order at 16 MB/s, each no sooner than a
    // 50 ms round trip after it was sent: BDP = 800 KB ≈ 49 blocks, and the
    // pipeline should settle near twice that.
    let mut queue: std::collections::VecDeque<(BlockRef, u64)> =
        first.into_iter().map(|b| (b, 0)).collect();
    let service = (f64::from(KB16) / 16e6 * 1e6) as u64;
    let mut last = 0u64;
    for _ in 0..3000 {
        let (b, sent) = queue.pop_front().unwrap();
        last = (sent + 50_000).max(last + service);
        let now = Time::from_micros(last);
        s.handle_bytes_received(now, A, u64::from(KB16));
        s.handle_block(now, A, b).unwrap();
        for r in requests(&drain(&mut s), A) {
            queue.push_back((r, last));
        }
    }
    let now_us = last;
    let info = s.peer_info(Time::from_micros(now_us), A).unwrap();
    let depth = info.outstanding_requests;
    assert!((60..=140).contains(&depth), "depth {depth}, {info:?}");
}

#[test]
fn serving_checks_choke_have_and_bounds() {
    let n = 4;
    let mut s = Swarm::new(geo(n, KB16), &bits(n, [0]), cfg(), 2).unwrap();
    s.handle_peer_connected(t(0), A, false).unwrap();
    let acts = drain(&mut s);
    assert_eq!(msgs_to(&acts, A), vec![Message::Bitfield(bits(n, [0]))]);
    let b0 = BlockRef {
        piece: 0,
        offset: 0,
        len: KB16,
    };
    // Choked: rejected.
    s.handle_request(t(1), A, b0).unwrap();
    assert_eq!(msgs_to(&drain(&mut s), A), vec![Message::Reject(b0)]);
    s.handle_interested(t(1), A, true).unwrap();
    assert!(s.is_unchoked(A));
    drain(&mut s);
    s.handle_request(t(2), A, b0).unwrap();
    assert_eq!(
        drain(&mut s),
        vec![Action::ServeBlock { peer: A, block: b0 }]
    );
    // A piece we do not have: rejected.
    let b1 = BlockRef { piece: 1, ..b0 };
    s.handle_request(t(2), A, b1).unwrap();
    assert_eq!(msgs_to(&drain(&mut s), A), vec![Message::Reject(b1)]);
    // Past the end of the piece: a protocol violation.
    s.handle_request(t(3), A, BlockRef { offset: 1, ..b0 })
        .unwrap();
    assert_eq!(
        drain(&mut s),
        vec![Action::Disconnect {
            peer: A,
            reason: DisconnectReason::Protocol(Violation::BadRequest)
        }]
    );
    assert_eq!(
        s.handle_request(t(3), A, b0),
        Err(SwarmError::UnknownPeer(A))
    );
}

#[test]
fn bad_announcements_end_the_connection() {
    let n = 4;
    let mut s = Swarm::new(geo(n, KB16), &bits(n, []), cfg(), 2).unwrap();
    s.handle_peer_connected(t(0), A, false).unwrap();
    s.handle_have(t(0), A, 4).unwrap();
    assert!(drain(&mut s).contains(&Action::Disconnect {
        peer: A,
        reason: DisconnectReason::Protocol(Violation::PieceOutOfRange)
    }));
    s.handle_peer_connected(t(0), B, false).unwrap();
    s.handle_have_none(t(0), B).unwrap();
    s.handle_have_all(t(0), B).unwrap();
    assert!(drain(&mut s).contains(&Action::Disconnect {
        peer: B,
        reason: DisconnectReason::Protocol(Violation::DuplicateBitfield)
    }));
    assert_eq!(
        s.handle_peer_connected(t(0), B, false),
        Ok(()),
        "a dropped peer may come back"
    );
    assert!(Swarm::new(geo(n, KB16), &[0, 0], cfg(), 0).is_err());
    assert_eq!(s.poll_timeout(), Some(t(0) + Duration::from_millis(250)));
}

/// A node that completes after fetching fast, and then gives every slot to
/// slow peers furthest behind, counts those slots as thin against what a
/// connection carried to it, and opens another for a peer that can take
/// more; before, with no fast slot to compare them with, it served only
/// the slow ones (heterogeneous at 5,000 nodes: a 10 Gbit/s node at
/// 67 Mbit/s while its fast neighbours waited).
#[test]
fn a_node_that_completes_compares_slow_slots_with_what_it_received() {
    let n = 16;
    let c = slots(2, 2);
    let mut s = Swarm::new(geo(n, KB16), &bits(n, 0..n - 1), c, 4).unwrap();
    // F is ahead (pieces 3..16) and has our last piece; 10-12 are slow
    // and far behind (pieces 0..2), as many as the seed's slots.
    let f = PeerKey(9);
    let slow: Vec<PeerKey> = (10..13).map(PeerKey).collect();
    s.handle_peer_connected(t(0), f, true).unwrap();
    s.handle_bitfield(t(0), f, &bits(n, 3..n)).unwrap();
    s.handle_choked(t(0), f, false).unwrap();
    assert_eq!(requests(&drain(&mut s), f).len(), 1);
    // 256 KB from F in 50 ms.
    s.handle_bytes_received(t(50), f, 16 * u64::from(KB16));
    deliver_piece(&mut s, t(50), f, n - 1);
    assert!(s.is_complete());
    for &k in &slow {
        s.handle_peer_connected(t(50), k, false).unwrap();
        s.handle_bitfield(t(50), k, &bits(n, 0..2)).unwrap();
        s.handle_interested(t(50), k, true).unwrap();
    }
    let all: Vec<PeerKey> = slow.iter().chain([&f]).copied().collect();
    let mut now = 0;
    while now < 12_000 {
        now += 250;
        // 4 KB/s to a slow peer, 64 KB/s to F.
        serve_tick(&mut s, now, &all, 2, |k| if k == f { KB16 } else { 1024 });
        drain(&mut s);
        if now == 10_500 {
            // F wants our pieces only now, past the round at 10 s: it
            // never held a slot whose rate would show what one can carry.
            s.handle_interested(t(now), f, true).unwrap();
        }
    }
    // The three regular slots are the slow peers' (furthest behind), and
    // F has an extra one.
    assert!(slow.iter().all(|&k| s.is_unchoked(k)));
    assert!(s.is_unchoked(f), "F got no slot");
}
