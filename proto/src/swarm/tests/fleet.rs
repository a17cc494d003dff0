//! Leechers of a trusted fleet ([`LeecherChoking::FurthestBehind`]): they
//! rank peers as a seed does, and keep a seed's rule against peers that
//! hold a slot without using it.

use crate::swarm::{LeecherChoking, PeerKey, Swarm, SwarmConfig};

use super::util::{bits, block, drain, geo, slots, t, KB16};

/// 16 pieces; we hold 0..4.
const N: u32 = 16;

fn leecher(choking: LeecherChoking) -> Swarm {
    let c = SwarmConfig {
        leecher_choking: choking,
        ..slots(3, 0)
    };
    Swarm::new(geo(N, KB16), &bits(N, 0..4), c, 9).unwrap()
}

/// Peer `10 + i` holds `i` of the pieces we lack and sends us `i × 100`
/// KB/s: the fastest uploaders are those furthest ahead. Returns the keys
/// and the time after two choke rounds.
fn run_rounds(s: &mut Swarm) -> (Vec<PeerKey>, u64) {
    let peers: Vec<PeerKey> = (10..20).map(PeerKey).collect();
    for (i, &k) in peers.iter().enumerate() {
        s.handle_peer_connected(t(0), k, false).unwrap();
        s.handle_bitfield(t(0), k, &bits(N, 4..4 + i as u32))
            .unwrap();
        s.handle_interested(t(0), k, true).unwrap();
    }
    let mut now = 0;
    while now < 21_000 {
        now += 250;
        for (i, &k) in peers.iter().enumerate() {
            s.handle_bytes_received(t(now), k, i as u64 * 25_000);
        }
        // Every peer we unchoke asks for something, so none stalls.
        for &k in &peers {
            if s.is_unchoked(k) {
                s.handle_request(t(now), k, block(0, 0)).unwrap();
            }
        }
        s.handle_timeout(t(now));
        drain(s);
    }
    (peers, now)
}

/// The regular slots go to the peers with the fewest pieces, however fast
/// the others upload to us; a reciprocating leecher, the same inputs
/// given, picks the fastest.
#[test]
fn a_fleet_leecher_unchokes_the_peers_furthest_behind() {
    let mut fleet = leecher(LeecherChoking::FurthestBehind);
    let (peers, _) = run_rounds(&mut fleet);
    let unchoked = |s: &Swarm| -> Vec<PeerKey> {
        peers
            .iter()
            .copied()
            .filter(|&k| s.is_unchoked(k))
            .collect()
    };
    let got = unchoked(&fleet);
    assert_eq!(got.len(), 4, "{got:?}");
    for k in [PeerKey(10), PeerKey(11), PeerKey(12)] {
        assert!(fleet.is_unchoked(k), "{k} not unchoked: {got:?}");
    }
    let mut tit_for_tat = leecher(LeecherChoking::Reciprocate);
    run_rounds(&mut tit_for_tat);
    let got = unchoked(&tit_for_tat);
    for k in [PeerKey(17), PeerKey(18), PeerKey(19)] {
        assert!(tit_for_tat.is_unchoked(k), "{k} not unchoked: {got:?}");
    }
}

/// A peer furthest behind that stops asking (it crashed, say) would keep
/// a fleet leecher's slot for good, since it never catches up: like a
/// seed, the leecher takes the slot back after the slot stall timeout.
#[test]
fn a_fleet_leecher_takes_back_a_slot_its_peer_does_not_use() {
    for (choking, taken) in [
        (LeecherChoking::FurthestBehind, true),
        (LeecherChoking::Reciprocate, false),
    ] {
        let mut s = leecher(choking);
        let quiet = PeerKey(30);
        let busy: Vec<PeerKey> = (31..35).map(PeerKey).collect();
        s.handle_peer_connected(t(0), quiet, false).unwrap();
        s.handle_have_none(t(0), quiet).unwrap();
        s.handle_interested(t(0), quiet, true).unwrap();
        for (i, &k) in busy.iter().enumerate() {
            s.handle_peer_connected(t(0), k, false).unwrap();
            s.handle_bitfield(t(0), k, &bits(N, 4..5 + i as u32))
                .unwrap();
            s.handle_interested(t(0), k, true).unwrap();
        }
        drain(&mut s);
        assert!(s.is_unchoked(quiet), "{choking:?}: free slots fill at once");
        // The others ask every tick; `quiet` never does. 3 s: before the
        // first choke round, so only the stall rule can move the slot.
        let mut now = 0;
        while now < 3_000 {
            now += 250;
            for &k in &busy {
                if s.is_unchoked(k) {
                    s.handle_request(t(now), k, block(0, 0)).unwrap();
                }
            }
            s.handle_timeout(t(now));
            drain(&mut s);
        }
        assert_eq!(
            !s.is_unchoked(quiet),
            taken,
            "{choking:?}: the silent peer's slot"
        );
        if taken {
            assert_eq!(
                busy.iter().filter(|&&k| s.is_unchoked(k)).count(),
                4,
                "its slot went to a peer that waited"
            );
        }
    }
}
