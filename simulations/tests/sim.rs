//! Whole runs of the simulator over real swarms: a small flash crowd near
//! the fluid bound, determinism, a heterogeneous fleet, and the shipped
//! scenario files.

use std::path::Path;

use shoal_sim::net::{run_scenario, Outcome};
use shoal_sim::scenario::Scenario;

/// 60 leechers at 1 Gbit/s up, 4 Gbit/s down, one 1 Gbit/s seed, 256 MiB
/// in 1 MiB pieces, degree 12, 1 ms one-way.
const SMALL_FLASH: &str = r#"
name = "small-flash"
seed = 7
nodes = 60
file_mib = 256
piece_kib = 1024
degree = 12
latency_ms = 1.0

[seeders]
up_mbps = 1000

[[class]]
up_mbps = 1000
down_mbps = 4000
"#;

fn run(text: &str) -> Outcome {
    let s = Scenario::parse(text).unwrap();
    run_scenario(&s).unwrap().0
}

#[test]
fn a_small_flash_crowd_finishes_within_1_2_t_min() {
    let out = run(SMALL_FLASH);
    assert!(out.all_completed(), "{:?}", out.completions_us);
    let ratio = out.ratio().unwrap();
    let copies = out.seed_uploaded as f64 / out.file_bytes as f64;
    println!(
        "small flash crowd: last {:.3} s, T_min {:.3} s, ratio {ratio:.3}, seed sent {copies:.3} copies",
        out.quantile_secs(1.0).unwrap(),
        out.t_min
    );
    assert!(ratio <= 1.2, "last completion {ratio:.3} x T_min");
}

#[test]
fn the_same_seed_gives_the_same_completions() {
    let a = run(SMALL_FLASH);
    let b = run(SMALL_FLASH);
    assert_eq!(a.completions_us, b.completions_us);
    assert_eq!(a.events, b.events);
    assert_eq!(a.seed_uploaded, b.seed_uploaded);
    let c = run(&SMALL_FLASH.replace("seed = 7", "seed = 8"));
    assert_ne!(a.completions_us, c.completions_us);
}

#[test]
fn a_heterogeneous_fleet_completes() {
    let text = r#"
name = "small-heterogeneous"
nodes = 30
file_mib = 64
piece_kib = 1024
degree = 8
regions = [[0.5, 20.0], [20.0, 0.5]]

[seeders]
up_mbps = 10000

[[class]]
up_mbps = 100
down_mbps = 100

[[class]]
up_mbps = 1000
down_mbps = 1000
region = 1

[[class]]
up_mbps = 10000
down_mbps = 10000
"#;
    let out = run(text);
    assert!(out.all_completed(), "{:?}", out.completions_us);
    let ratio = out.ratio().unwrap();
    println!("heterogeneous: ratio {ratio:.3}");
    // The 100 Mbit/s downloaders bind T_min; everyone must finish within
    // a generous factor of it.
    assert!(ratio < 2.0, "ratio {ratio:.3}");
}

#[test]
fn the_shipped_scenarios_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for name in ["flash-crowd.toml", "heterogeneous.toml"] {
        let s = Scenario::load(&dir.join(name)).unwrap();
        assert!(s.nodes > 0, "{name}");
    }
    let hetero = Scenario::load(&dir.join("heterogeneous.toml")).unwrap();
    let mut rng = shoal_sim::rng::SplitMix::new(1);
    let specs = hetero.node_specs(&mut rng);
    assert_eq!(specs.len(), hetero.nodes + 1);
    let slow = specs.iter().filter(|n| !n.seed && n.up == 12.5e6).count();
    assert_eq!(slow, hetero.nodes / 3);
}

#[test]
fn bad_scenarios_are_refused() {
    assert!(Scenario::parse(&SMALL_FLASH.replace("nodes = 60", "nodes = 0")).is_err());
    assert!(Scenario::parse(
        &SMALL_FLASH.replace("up_mbps = 1000\n\n[[class]]", "up_mbps = -1\n\n[[class]]")
    )
    .is_err());
    assert!(Scenario::parse(&format!("{SMALL_FLASH}\nregion_typo = 1\n")).is_err());
}

#[test]
fn late_joiners_and_two_seeders_complete() {
    let text = SMALL_FLASH
        .replace("nodes = 60", "nodes = 20\njoin_spread_secs = 1.0")
        .replace("file_mib = 256", "file_mib = 32")
        .replace("[seeders]", "[seeders]\ncount = 2");
    let out = run(&text);
    assert!(out.all_completed(), "{:?}", out.completions_us);
    assert_eq!(out.completions_us.len(), 20);
    // T_min ignores join times; the last joiner arrives up to 1 s late.
    let last = out.quantile_secs(1.0).unwrap();
    assert!(
        last < 1.0 + 5.0 * out.t_min,
        "{last} s, T_min {}",
        out.t_min
    );
}
