//! Peers that go silent (crashed, or their path died) before the
//! transport notices: a spreading seed must not keep their firm claims,
//! a seed must not keep them in its slots, and an endgame must not wait
//! for their requests until the stall timeout. Peers that are only slow
//! (a long lossy path) must not hold the swarm back either.

use crate::swarm::{Action, Message, Swarm, SwarmConfig};

use super::util::{block, drain, haves, msgs_to, requests, t, A, B, KB16};

/// An initial seed of four pieces of `blocks` 16 KiB blocks, spreading
/// one piece ahead to peers A and B; returns it with the piece each was
/// told first.
fn spreading_seed(blocks: u32) -> (Swarm, u32, u32) {
    let c = SwarmConfig {
        block_size: KB16,
        spread_ahead_bytes: u64::from(blocks * KB16),
        ..SwarmConfig::default()
    };
    let geo = crate::swarm::Geometry::new(u64::from(4 * blocks * KB16), u64::from(blocks * KB16))
        .unwrap();
    let mut s = Swarm::new(geo, &[0xf0], c, 9).unwrap();
    let mut first = Vec::new();
    for k in [A, B] {
        s.handle_peer_connected(t(0), k, false).unwrap();
        s.handle_have_none(t(0), k).unwrap();
        let told = haves(&drain(&mut s), k);
        assert_eq!(told.len(), 1, "{told:?}");
        first.push(told[0]);
    }
    (s, first[0], first[1])
}

/// B fetches (two blocks a piece) and announces every piece it is told,
/// at once, until it is told nothing more; returns the pieces it got and
/// the time reached.
fn b_fetches_what_it_is_told(s: &mut Swarm, mut now: u64, first: u32) -> (Vec<u32>, u64) {
    let mut todo = vec![first];
    let mut got = Vec::new();
    while let Some(p) = todo.pop() {
        now += 1;
        for b in 0..2 {
            s.handle_request(t(now), B, block(p, b)).unwrap();
            s.handle_bytes_sent(t(now), B, u64::from(KB16));
        }
        s.handle_have(t(now), B, p).unwrap();
        got.push(p);
        todo.extend(haves(&drain(s), B));
    }
    (got, now)
}

#[test]
fn a_spreading_seed_takes_back_the_firm_claim_of_a_silent_peer() {
    let (mut s, pa, pb) = spreading_seed(2);
    // A asks for its piece (its claims are firm now: this one and the
    // next, revealed as it asked), takes one block, then goes silent: the
    // other block never leaves (the connection is dead) and nothing comes
    // back.
    s.handle_request(t(1), A, block(pa, 0)).unwrap();
    s.handle_request(t(1), A, block(pa, 1)).unwrap();
    s.handle_bytes_sent(t(5), A, u64::from(KB16));
    let mut held = vec![pa];
    held.extend(haves(&drain(&mut s), A));
    assert_eq!(held.len(), 2);
    let (got, mut now) = b_fetches_what_it_is_told(&mut s, 5, pb);
    assert_eq!(got.len(), 2, "B got every piece but A's: {got:?}");
    assert!(got.iter().all(|p| !held.contains(p)));
    // Within the slot stall timeout (1 s) A keeps its claim ...
    let mut told_b_at = None;
    let mut choked_a_at = None;
    while now < 10_000 && told_b_at.is_none() {
        now += 250;
        s.handle_timeout(t(now));
        let acts = drain(&mut s);
        if haves(&acts, B).iter().any(|p| held.contains(p)) {
            told_b_at = Some(now);
        }
        if msgs_to(&acts, A).contains(&Message::Choke) {
            choked_a_at = Some(now);
        }
    }
    // ... and then loses them, with its slot, long before a transport
    // would notice the crash.
    let at = told_b_at.expect("A's pieces were never revealed to B");
    assert!((1_005..=1_500).contains(&at), "revealed at {at} ms");
    assert_eq!(choked_a_at, Some(at));
    assert!(!s.is_unchoked(A));
    // It gets no slot back while it stays silent.
    for _ in 0..8 {
        now += 250;
        s.handle_timeout(t(now));
    }
    assert!(!s.is_unchoked(A));
    // A sign of life (a Have) makes it a candidate again.
    s.handle_have(t(now), A, pb).unwrap();
    s.handle_interested(t(now), A, true).unwrap();
    assert!(s.is_unchoked(A));
}

#[test]
fn a_slow_peer_that_keeps_taking_bytes_keeps_its_claim() {
    let (mut s, pa, pb) = spreading_seed(4);
    for b in 0..4 {
        s.handle_request(t(1), A, block(pa, b)).unwrap();
    }
    let mut held = vec![pa];
    held.extend(haves(&drain(&mut s), A));
    // B takes the other pieces; the blocks of A's piece leave slowly.
    let mut now = 2;
    let mut todo = vec![pb];
    while let Some(p) = todo.pop() {
        now += 1;
        for b in 0..4 {
            s.handle_request(t(now), B, block(p, b)).unwrap();
            s.handle_bytes_sent(t(now), B, u64::from(KB16));
        }
        s.handle_have(t(now), B, p).unwrap();
        todo.extend(haves(&drain(&mut s), B));
    }
    let mut sent = 0;
    for ms in (250..=3_000).step_by(250) {
        if ms % 750 == 0 && sent < 4 {
            s.handle_bytes_sent(t(ms), A, u64::from(KB16));
            sent += 1;
        }
        s.handle_timeout(t(ms));
        let acts = drain(&mut s);
        let twice: Vec<u32> = haves(&acts, B)
            .into_iter()
            .filter(|p| held.contains(p))
            .collect();
        assert!(twice.is_empty(), "{twice:?} revealed twice at {ms} ms");
        assert!(!msgs_to(&acts, A).contains(&Message::Choke), "at {ms} ms");
    }
    assert_eq!(sent, 4);
    assert!(s.is_unchoked(A));
}

#[test]
fn an_endgame_does_not_wait_for_a_silent_peer_until_its_stall_timeout() {
    // One piece of four blocks, two requests per peer, one requester per
    // block even in endgame.
    let c = SwarmConfig {
        block_size: KB16,
        min_queue_blocks: 2,
        max_queue_blocks: 2,
        random_first_pieces: 0,
        endgame_max_requesters: 1,
        ..SwarmConfig::default()
    };
    let geo = crate::swarm::Geometry::new(u64::from(4 * KB16), u64::from(4 * KB16)).unwrap();
    let mut s = Swarm::new(geo, &[0], c.clone(), 4).unwrap();
    for k in [A, B] {
        s.handle_peer_connected(t(0), k, true).unwrap();
        s.handle_have_all(t(0), k).unwrap();
    }
    s.handle_choked(t(0), A, false).unwrap();
    let ra = requests(&drain(&mut s), A);
    assert_eq!(ra, vec![block(0, 0), block(0, 1)]);
    // A delivers one block (so it has a rate), takes block 2, and dies.
    s.handle_bytes_received(t(10), A, u64::from(KB16));
    s.handle_block(t(10), A, ra[0]).unwrap();
    assert_eq!(requests(&drain(&mut s), A), vec![block(0, 2)]);
    s.handle_choked(t(20), B, false).unwrap();
    let rb = requests(&drain(&mut s), B);
    assert_eq!(rb, vec![block(0, 3)]);
    assert!(s.stats().endgame);
    s.handle_bytes_received(t(30), B, u64::from(KB16));
    s.handle_block(t(30), B, rb[0]).unwrap();
    assert!(
        requests(&drain(&mut s), B).is_empty(),
        "blocks 1 and 2 are at their cap"
    );
    // B gets A's blocks well before the stall timeout would free them.
    let mut now = 30;
    let mut taken = Vec::new();
    while now < 10_000 && taken.is_empty() {
        now = (now / 250 + 1) * 250;
        s.handle_timeout(t(now));
        let acts = drain(&mut s);
        assert!(!msgs_to(&acts, A).contains(&Message::Cancel(block(0, 1))));
        taken = requests(&acts, B);
    }
    assert!(
        now < c.min_stall_timeout.as_millis() as u64 / 2,
        "at {now} ms"
    );
    assert_eq!(taken, vec![block(0, 1), block(0, 2)]);
    // Whoever answers first wins; the other request is cancelled.
    for b in &taken {
        s.handle_bytes_received(t(now + 1), B, u64::from(KB16));
        s.handle_block(t(now + 1), B, *b).unwrap();
    }
    let acts = drain(&mut s);
    assert!(acts.contains(&Action::VerifyPiece { piece: 0 }));
    let cancels: Vec<Message> = msgs_to(&acts, A);
    assert_eq!(
        cancels,
        vec![Message::Cancel(block(0, 1)), Message::Cancel(block(0, 2))]
    );
}

/// A spreading seed whose every piece has gone out or is on its way to
/// a peer whose path crawls gives a starved fast peer a second copy of
/// the crawling peer's pieces, instead of waiting on that path; with the
/// thin-slot rule off it waits.
#[test]
fn a_starved_peer_gets_a_second_copy_of_what_a_thin_peer_fetches() {
    let run = |max_thin_slots: usize| {
        let c = SwarmConfig {
            block_size: KB16,
            spread_ahead_bytes: u64::from(2 * KB16),
            max_thin_slots,
            ..SwarmConfig::default()
        };
        let geo = crate::swarm::Geometry::new(u64::from(16 * KB16), u64::from(2 * KB16)).unwrap();
        let mut s = Swarm::new(geo, &[0xff], c, 9).unwrap();
        let mut told = Vec::new();
        for k in [A, B] {
            s.handle_peer_connected(t(0), k, false).unwrap();
            s.handle_have_none(t(0), k).unwrap();
            told.push(haves(&drain(&mut s), k));
        }
        let (mut a_todo, mut b_told) = (told[0].clone(), told[1].clone());
        // B asks for its piece at once, then receives 2 KB/s.
        for b in 0..2 {
            s.handle_request(t(0), B, block(b_told[0], b)).unwrap();
        }
        b_told.extend(haves(&drain(&mut s), B));
        let (mut a_got, mut now) = (Vec::new(), 0);
        while now < 6_000 {
            now += 250;
            s.handle_bytes_sent(t(now), B, 512);
            // A takes a whole piece per tick (128 KB/s) and announces it.
            if let Some(p) = a_todo.pop() {
                for b in 0..2 {
                    s.handle_request(t(now), A, block(p, b)).unwrap();
                    s.handle_bytes_sent(t(now), A, u64::from(KB16));
                }
                s.handle_have(t(now), A, p).unwrap();
                a_got.push(p);
            }
            s.handle_timeout(t(now));
            let acts = drain(&mut s);
            a_todo.extend(haves(&acts, A));
            b_told.extend(haves(&acts, B));
        }
        assert!(s.is_unchoked(B), "B keeps its slot");
        let twice: Vec<u32> = a_got
            .iter()
            .copied()
            .filter(|p| b_told.contains(p))
            .collect();
        (twice, a_got.len())
    };
    // B held two pieces (the one it asked for, one more ahead): A got both
    // too, and so every piece.
    let (twice, got) = run(6);
    assert_eq!((twice.len(), got), (2, 8), "{twice:?}");
    let (twice, got) = run(0);
    assert_eq!((twice.len(), got), (0, 6), "{twice:?}");
}

/// A seed of four two-block pieces that does not spread.
fn plain_seed() -> Swarm {
    let c = SwarmConfig {
        block_size: KB16,
        spread_distinct: false,
        ..SwarmConfig::default()
    };
    let geo = crate::swarm::Geometry::new(u64::from(8 * KB16), u64::from(2 * KB16)).unwrap();
    Swarm::new(geo, &[0xf0], c, 9).unwrap()
}

/// The slot-stall rule frees a slot for others; a seed with nobody else
/// to serve keeps serving its one peer through a silence, since a peer
/// reading slowly (a download limit) is silent too until a whole block
/// is acknowledged.
#[test]
fn a_lone_peer_keeps_its_slot_through_a_silence() {
    let mut s = plain_seed();
    s.handle_peer_connected(t(0), A, false).unwrap();
    s.handle_have_none(t(0), A).unwrap();
    s.handle_interested(t(0), A, true).unwrap();
    assert!(s.is_unchoked(A));
    s.handle_request(t(1), A, block(0, 0)).unwrap();
    s.handle_request(t(1), A, block(0, 1)).unwrap();
    s.handle_bytes_sent(t(5), A, u64::from(KB16));
    let mut now = 5;
    while now < 5_000 {
        now += 250;
        s.handle_timeout(t(now));
        drain(&mut s);
    }
    assert!(s.is_unchoked(A), "the only peer lost its slot");
    // With a second peer waiting, the same silence costs A its slot.
    s.handle_peer_connected(t(now), B, false).unwrap();
    s.handle_have_none(t(now), B).unwrap();
    s.handle_interested(t(now), B, true).unwrap();
    now += 250;
    s.handle_timeout(t(now));
    assert!(!s.is_unchoked(A), "a silent peer kept a slot another wants");
}

/// A peer taken for stalled that has nothing left to say (it fetched
/// everything else from a near peer, which then left: `near.rs`) gets a
/// slot again at the next choke round rather than never.
#[test]
fn a_peer_taken_for_stalled_gets_another_chance_at_the_next_round() {
    let mut s = plain_seed();
    for k in [A, B] {
        s.handle_peer_connected(t(0), k, false).unwrap();
        s.handle_have_none(t(0), k).unwrap();
        s.handle_interested(t(0), k, true).unwrap();
    }
    assert!(s.is_unchoked(A) && s.is_unchoked(B));
    // B asks; A says nothing for seconds: its slot goes.
    let mut now = 0;
    while now < 3_000 {
        now += 250;
        s.handle_request(t(now), B, block(0, 0)).unwrap();
        s.handle_bytes_sent(t(now), B, u64::from(KB16));
        s.handle_timeout(t(now));
        drain(&mut s);
    }
    assert!(!s.is_unchoked(A), "the silent peer kept its slot");
    // B leaves; A, still interested, has nothing to announce.
    s.handle_peer_disconnected(t(now), B);
    drain(&mut s);
    let round = now + 10_000;
    while now < round + 250 {
        now += 250;
        s.handle_timeout(t(now));
        drain(&mut s);
    }
    assert!(s.is_unchoked(A), "shut out after the round");
}

/// A peer the spreading seed found starved (every piece it lacks was
/// announced or firmly claimed by another) is offered a piece as soon as
/// that piece is back in play, in the same input, because it may have
/// nothing left to say that would prompt the seed: here the other peer,
/// which had announced the pieces, leaves holding no reveal.
#[test]
fn a_starved_peer_is_offered_a_piece_that_is_unseen_again() {
    let (mut s, pa, pb) = spreading_seed(2);
    let (mut a_told, mut b_told) = (vec![pa], vec![pb]);
    // Each asks for its first piece and is told one more ahead.
    for (k, first, list) in [(A, a_told[0], &mut a_told), (B, b_told[0], &mut b_told)] {
        for b in 0..2 {
            s.handle_request(t(1), k, block(first, b)).unwrap();
        }
        list.extend(haves(&drain(&mut s), k));
    }
    assert_eq!(
        (a_told.len(), b_told.len()),
        (2, 2),
        "{a_told:?} {b_told:?}"
    );
    // A takes its first piece, announces it and asks for the one ahead:
    // nothing is left to reveal to it (B holds the other two).
    for b in 0..2 {
        s.handle_bytes_sent(t(2), A, u64::from(KB16));
        s.handle_request(t(2), A, block(a_told[1], b)).unwrap();
    }
    s.handle_have(t(2), A, a_told[0]).unwrap();
    assert_eq!(haves(&drain(&mut s), A), Vec::<u32>::new());
    // B fetches and announces both of its pieces, holding no reveal after.
    let mut now = 3;
    for &p in &b_told {
        for b in 0..2 {
            s.handle_request(t(now), B, block(p, b)).unwrap();
            s.handle_bytes_sent(t(now), B, u64::from(KB16));
        }
        s.handle_have(t(now), B, p).unwrap();
        now += 1;
    }
    assert_eq!(haves(&drain(&mut s), A), Vec::<u32>::new());
    // B leaves before A could fetch B's pieces from it: they are unseen
    // again, and A, still fetching its second piece, is offered one now.
    s.handle_peer_disconnected(t(now), B);
    let offered = haves(&drain(&mut s), A);
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert!(
        b_told.contains(&offered[0]),
        "{offered:?} not one of {b_told:?}"
    );
}
