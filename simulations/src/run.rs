//! Running a scenario end to end: its setup built once, the swarms run
//! over it ([`crate::net::Sim`]), then its tracker replicas, if it has
//! any, over the same setup ([`crate::replication`]) unless the swarm
//! run's nodes announced to them itself.

use std::time::Instant;

use crate::net::Sim;
use crate::outcome::Outcome;
use crate::setup::Setup;

/// Builds and runs a scenario; returns the outcome and the wall time.
pub fn run_scenario(
    s: &crate::scenario::Scenario,
) -> anyhow::Result<(Outcome, std::time::Duration)> {
    let setup = Setup::from_scenario(s)?;
    Ok(run_setup(&setup, false, None))
}

/// Runs the swarms of `setup` (on `threads`, if given); returns the
/// outcome and the wall time.
fn run_setup(
    setup: &Setup,
    progress: bool,
    threads: Option<usize>,
) -> (Outcome, std::time::Duration) {
    let start = Instant::now();
    let mut sim = Sim::new(setup).with_progress(progress);
    if let Some(n) = threads {
        sim = sim.with_threads(n);
    }
    let out = sim.run();
    (out, start.elapsed())
}

/// [`run_scenario`], optionally printing progress to stderr and on a
/// given number of threads, and then the scenario's tracker replicas (if
/// any) over the same setup; the duration is the swarm run's.
pub fn run_scenario_with(
    s: &crate::scenario::Scenario,
    progress: bool,
    threads: Option<usize>,
) -> anyhow::Result<(
    Outcome,
    std::time::Duration,
    Option<crate::replication::Replication>,
)> {
    let setup = Setup::from_scenario(s)?;
    let (out, wall) = run_setup(&setup, progress, threads);
    let replication = crate::replication::run_for(s, &setup, &out);
    Ok((out, wall, replication))
}
