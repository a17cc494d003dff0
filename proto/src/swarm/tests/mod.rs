//! Tests of the swarm machine: single-swarm policy tests in `unit`, and
//! whole swarms over the deterministic network of `harness` in `sim`.

mod fleet;
mod harness;
mod liveness;
mod near;
mod scenarios;
mod sim;
mod unit;
mod util;
