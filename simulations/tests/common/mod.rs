//! What the simulator's test files share: the small flash crowd, a run
//! of a scenario's text, and a check that holds for every run.

use shoal_sim::outcome::Outcome;
use shoal_sim::run::run_scenario;
use shoal_sim::scenario::Scenario;

/// 200 leechers at 1 Gbit/s up, 4 Gbit/s down, one 1 Gbit/s seed,
/// 256 MiB in 1 MiB pieces, degree 16, 1 ms one-way.
pub const FLASH: &str = r#"
name = "small-flash"
seed = 7
nodes = 200
file_mib = 256
piece_kib = 1024
degree = 16
latency_ms = 1.0

[seeders]
up_mbps = 1000

[[class]]
up_mbps = 1000
down_mbps = 4000
"#;

/// Runs a scenario given as TOML text.
pub fn run(text: &str) -> Outcome {
    let s = Scenario::parse(text).unwrap();
    run_scenario(&s).unwrap().0
}

/// No leecher downloaded faster than its own downlink allows: F / down
/// from its join to its completion, whatever the swarm did. The network
/// model re-divides a downlink between windows; this is what keeps those
/// divisions from over-filling it on the whole.
pub fn assert_within_downlinks(out: &Outcome) {
    let f = out.file_bytes as f64;
    let mut checked = 0;
    for n in &out.nodes {
        let Some(done) = n.completed_us else { continue };
        let took = (done - n.join_us) as f64 / 1e6;
        let least = f / n.down;
        assert!(
            took >= least - 1e-6,
            "node {} took {took:.6} s; its downlink needs {least:.6} s",
            n.node
        );
        checked += 1;
    }
    assert!(checked > 0, "no node completed");
}
