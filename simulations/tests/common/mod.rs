//! What the simulator's test files share: the small flash crowd, and a
//! run of a scenario's text.

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
