//! Policy scenarios over the in-test network, printed rather than
//! asserted: run with `cargo test -p shoal-proto scenarios -- --ignored
//! --nocapture` when tuning. Each line gives the finish time against the
//! fluid lower bound, how many copies the first seed sent, when the first
//! and median leecher finished (as fractions of the bound), and when the
//! first seed stopped masking.

use std::time::Duration;

use super::harness::{Net, Spec};
use super::sim::t_min;
use crate::swarm::{Geometry, SwarmConfig};

const MIB: u64 = 1 << 20;

fn run(name: &str, pieces: u64, specs: &[Spec], cfg: &SwarmConfig, latency_ms: u64) {
    let geo = Geometry::new(pieces * MIB, MIB).unwrap();
    report(
        name,
        pieces,
        specs,
        Net::new(geo, cfg, specs, 42),
        latency_ms,
    );
}

/// Each node links to `degree` others: a ring plus random chords, the
/// seed (node 0) to `seed_degree` random leechers.
fn sparse(n: usize, degree: usize, seed_degree: usize) -> Vec<(usize, usize)> {
    let mut rng = crate::rng::Rng::new(99);
    let mut links = std::collections::BTreeSet::new();
    for i in 1..n {
        let j = if i + 1 < n { i + 1 } else { 1 };
        links.insert((i.min(j), i.max(j)));
    }
    while links.iter().filter(|l| l.0 == 0).count() < seed_degree {
        let j = 1 + rng.below(n as u64 - 1) as usize;
        links.insert((0, j));
    }
    while links.len() < n * degree / 2 {
        let a = 1 + rng.below(n as u64 - 1) as usize;
        let b = 1 + rng.below(n as u64 - 1) as usize;
        if a != b {
            links.insert((a.min(b), a.max(b)));
        }
    }
    links.into_iter().collect()
}

fn report(name: &str, pieces: u64, specs: &[Spec], mut net: Net, latency_ms: u64) {
    net.latency = Duration::from_millis(latency_ms);
    let ok = net.run(Duration::from_secs(10_000));
    let f = (pieces * MIB) as f64;
    let bound = t_min(f, specs);
    let secs = net
        .finish_time()
        .map_or(f64::NAN, |t| t.as_micros() as f64 / 1e6);
    let mut done: Vec<f64> = net
        .nodes
        .iter()
        .filter(|n| !n.spec.seed)
        .filter_map(|n| n.completed_at)
        .map(|t| t.as_micros() as f64 / 1e6 / bound)
        .collect();
    done.sort_by(f64::total_cmp);
    println!(
        "{name:28} ok={ok} {secs:6.1} s / T_min {bound:6.1} s = {:.3}; seed sent {:.3} copies; \
         first {:.2} median {:.2}; unmasked at {:.1} s; cancels {}",
        secs / bound,
        net.uploaded(0) as f64 / f,
        done.first().copied().unwrap_or(f64::NAN),
        done.get(done.len() / 2).copied().unwrap_or(f64::NAN),
        net.counters.seed_last_have.as_micros() as f64 / 1e6,
        net.counters.cancels,
    );
}

#[test]
#[ignore = "slow; prints a table for tuning"]
fn scenarios() {
    let u = 12.5e6;
    let d = SwarmConfig::default();
    let plain = SwarmConfig {
        spread_distinct: false,
        ..SwarmConfig::default()
    };
    let leechers = |n: usize, up: f64| (0..n).map(move |_| Spec::leecher(up, 4.0 * up));
    let with =
        |seeds: &[Spec], rest: Vec<Spec>| seeds.iter().copied().chain(rest).collect::<Vec<_>>();

    let s = with(&[Spec::seed(u)], leechers(8, u).collect());
    run("1+8, 1000 pieces", 1000, &s, &d, 5);
    run("1+8, 1000 pieces, no spread", 1000, &s, &plain, 5);
    run("1+8, 1000 pieces, 50 ms", 1000, &s, &d, 50);
    let s = with(&[Spec::seed(u)], leechers(30, u).collect());
    run("1+30", 500, &s, &d, 5);
    run("1+30, no spread", 500, &s, &plain, 5);
    let s = with(&[Spec::seed(4.0 * u)], leechers(30, u).collect());
    run("1+30, seed 4x", 500, &s, &d, 5);
    let least_served = SwarmConfig {
        seed_choking: crate::swarm::SeedChoking::LeastServed,
        ..SwarmConfig::default()
    };
    run("1+30, seed 4x, least-served", 500, &s, &least_served, 5);
    let s = with(
        &[Spec::seed(u)],
        (0..16)
            .map(|i| Spec::leecher(u * (0.5 + (i % 4) as f64 * 0.5), 4.0 * u))
            .collect(),
    );
    run("1+16, uploads 0.5-2x", 500, &s, &d, 5);
    let s = with(
        &[Spec::seed(u)],
        (0..8).map(|_| Spec::leecher(u, u)).collect(),
    );
    run("1+8, download = upload", 500, &s, &d, 5);
    let s = with(&[Spec::seed(u), Spec::seed(u)], leechers(20, u).collect());
    run("2+20", 500, &s, &d, 5);
    let s = with(&[Spec::seed(u)], leechers(60, u).collect());
    run("1+60", 300, &s, &d, 5);
    let s = with(&[Spec::seed(u)], leechers(200, u).collect());
    let geo = Geometry::new(300 * MIB, MIB).unwrap();
    let net = Net::with_links(geo, &d, &s, 42, &sparse(201, 12, 12));
    report("1+200, degree 12", 300, &s, net, 5);
    let s = with(
        &[Spec::seed(u)],
        (0..30)
            .map(|i| Spec {
                join: Duration::from_millis(500 * i),
                ..Spec::leecher(u, 4.0 * u)
            })
            .collect(),
    );
    run("1+30 joining over 15 s", 500, &s, &d, 5);
}
