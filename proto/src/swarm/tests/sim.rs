//! Whole swarms over the in-test network: completion, seed efficiency,
//! bad peers, endgame, choking, determinism, and the fluid lower bound.

use std::time::Duration;

use super::harness::{Net, Spec};
use crate::swarm::{DisconnectReason, Geometry, PeerKey, SwarmConfig};

const MIB: u64 = 1 << 20;
/// 10 MiB/s, a 100 MiB torrent moves in 10 s at this rate.
const RATE: f64 = 10.0 * MIB as f64;

fn geo(pieces: u64) -> Geometry {
    Geometry::new(pieces * MIB, MIB).unwrap()
}

/// T_min = max(F/u_seed, F/d_min, N·F/(u_seed + Σu_i)), in seconds.
pub(super) fn t_min(f: f64, specs: &[Spec]) -> f64 {
    let u_seed: f64 = specs.iter().filter(|s| s.seed).map(|s| s.up).sum();
    let leechers: Vec<&Spec> = specs.iter().filter(|s| !s.seed).collect();
    let d_min = leechers
        .iter()
        .map(|s| s.down)
        .fold(f64::INFINITY, f64::min);
    let sum_u: f64 = leechers.iter().map(|s| s.up).sum();
    let n = leechers.len() as f64;
    (f / u_seed).max(f / d_min).max(n * f / (u_seed + sum_u))
}

fn finish_secs(net: &Net) -> f64 {
    net.finish_time()
        .expect("every leecher completes")
        .as_micros() as f64
        / 1e6
}

#[test]
fn a_seed_and_one_leecher_complete() {
    let specs = [Spec::seed(RATE), Spec::leecher(RATE, 4.0 * RATE)];
    let mut net = Net::new(geo(40), &SwarmConfig::default(), &specs, 1);
    assert!(net.run(Duration::from_secs(60)));
    let secs = finish_secs(&net);
    let bound = t_min(40.0 * MIB as f64, &specs);
    assert!(secs < bound * 1.2, "{secs} s vs bound {bound} s");
    assert_eq!(net.counters.hash_failures, 0);
}

#[test]
fn one_seed_three_leechers_seed_sends_about_one_copy() {
    let pieces = 200;
    let specs = [
        Spec::seed(RATE),
        Spec::leecher(RATE, 4.0 * RATE),
        Spec::leecher(RATE, 4.0 * RATE),
        Spec::leecher(RATE, 4.0 * RATE),
    ];
    let mut net = Net::new(geo(pieces), &SwarmConfig::default(), &specs, 2);
    assert!(net.run(Duration::from_secs(300)));
    let f = pieces * MIB;
    let copies = net.uploaded(0) as f64 / f as f64;
    let secs = finish_secs(&net);
    let bound = t_min(f as f64, &specs);
    println!("1 seed + 3: {secs:.1} s, bound {bound:.1} s, seed sent {copies:.3} copies");
    assert!(copies <= 1.1, "seed sent {copies:.3} copies");
    assert!(secs <= bound * 1.2, "{secs} s vs bound {bound} s");
}

#[test]
fn two_spreading_seeds_do_not_wait_on_each_other() {
    // Each seed masks, so each courts the other, which never fetches: its
    // claims must stay soft and hold nothing back from the leechers.
    let mut specs = vec![Spec::seed(RATE), Spec::seed(RATE)];
    specs.extend((0..4).map(|_| Spec::leecher(RATE, 4.0 * RATE)));
    let mut net = Net::new(geo(80), &SwarmConfig::default(), &specs, 9);
    assert!(net.run(Duration::from_secs(120)));
    assert!(!net.nodes[0].swarm.is_spreading());
    let bound = t_min(80.0 * MIB as f64, &specs);
    assert!(finish_secs(&net) < bound * 1.3);
}

#[test]
fn a_corrupt_peer_is_banned_and_the_download_completes() {
    let mut corrupt = Spec::seed(RATE);
    corrupt.corrupt = true;
    let specs = [
        Spec::seed(RATE),
        corrupt,
        Spec::leecher(RATE, 4.0 * RATE),
        Spec::leecher(RATE, 4.0 * RATE),
    ];
    let mut net = Net::new(geo(60), &SwarmConfig::default(), &specs, 3);
    net.reconnect_after = Some(Duration::from_secs(1));
    assert!(net.run(Duration::from_secs(120)));
    for l in [2, 3] {
        assert!(net.nodes[l].swarm.is_banned(PeerKey(1)), "{l}");
        assert!(net.counters.bans.contains(&(l, 1)));
        assert!(!net.nodes[l].swarm.is_banned(PeerKey(0)));
        assert!(!net.nodes[l].swarm.is_banned(PeerKey(5 - l as u64)));
        assert!(net
            .counters
            .disconnects
            .contains(&(l, 1, DisconnectReason::BadData)));
    }
}

#[test]
fn a_mute_peer_is_dropped_and_the_download_completes() {
    let mut mute = Spec::seed(RATE);
    mute.mute = true;
    let specs = [Spec::seed(RATE), mute, Spec::leecher(RATE, 4.0 * RATE)];
    let cfg = SwarmConfig {
        spread_distinct: false,
        min_stall_timeout: Duration::from_secs(2),
        max_stall_timeout: Duration::from_secs(4),
        max_stalls: 2,
        ..SwarmConfig::default()
    };
    let mut net = Net::new(geo(200), &cfg, &specs, 4);
    assert!(net.run(Duration::from_secs(300)));
    assert!(net
        .counters
        .disconnects
        .contains(&(2, 1, DisconnectReason::Stalled)));
    let bound = t_min(200.0 * MIB as f64, &specs[..1]);
    assert!(finish_secs(&net) < bound * 1.2);
}

#[test]
fn endgame_cancels_duplicates_in_a_swarm() {
    let specs = [
        Spec::seed(RATE),
        Spec::seed(RATE / 3.0),
        Spec::leecher(RATE, 4.0 * RATE),
    ];
    let cfg = SwarmConfig {
        spread_distinct: false,
        ..SwarmConfig::default()
    };
    let mut net = Net::new(geo(30), &cfg, &specs, 5);
    assert!(net.run(Duration::from_secs(60)));
    assert!(net.counters.cancels > 0, "no endgame cancel");
}

#[test]
fn choking_never_exceeds_the_slots() {
    let mut specs = vec![Spec::seed(RATE)];
    specs.extend((0..11).map(|_| Spec::leecher(RATE, 4.0 * RATE)));
    let cfg = SwarmConfig::default();
    let slots = cfg.unchoke_slots + cfg.optimistic_slots;
    let mut net = Net::new(geo(60), &cfg, &specs, 6);
    assert!(net.run(Duration::from_secs(300)));
    let m = &net.counters.max_unchoked;
    // Leechers use exactly their slots; the seed more while it spreads.
    assert!((1..12).all(|i| m[&i] <= slots), "{m:?}");
    assert!((1..12).any(|i| m[&i] == slots), "{m:?}");
    assert_eq!(m[&0], cfg.spread_slots.min(11));
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let specs = [
        Spec::seed(RATE),
        Spec::leecher(RATE, 4.0 * RATE),
        Spec::leecher(RATE / 2.0, 4.0 * RATE),
    ];
    let run = |seed| {
        let mut net = Net::new(geo(30), &SwarmConfig::default(), &specs, seed);
        assert!(net.run(Duration::from_secs(120)));
        (net.trace, net.finish_time())
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a.0, run(8).0);
}

/// The property the simulator and the real-network benchmark hold the core
/// to: one seed and eight leechers, equal links, 1000 pieces, within 1.3×
/// of the fluid lower bound.
#[test]
fn one_seed_eight_leechers_near_the_fluid_bound() {
    let pieces = 1000;
    let up = 12.5e6;
    let mut specs = vec![Spec::seed(up)];
    specs.extend((0..8).map(|_| Spec::leecher(up, 4.0 * up)));
    let mut net = Net::new(geo(pieces), &SwarmConfig::default(), &specs, 8);
    assert!(net.run(Duration::from_secs(1000)));
    let f = (pieces * MIB) as f64;
    let bound = t_min(f, &specs);
    let secs = finish_secs(&net);
    let copies = net.uploaded(0) as f64 / f;
    println!(
        "1 seed + 8 leechers, 1000 pieces: {secs:.1} s simulated, T_min {bound:.1} s, \
         ratio {:.3}, seed sent {copies:.3} copies",
        secs / bound
    );
    assert!(secs / bound <= 1.3, "ratio {:.3}", secs / bound);
}
