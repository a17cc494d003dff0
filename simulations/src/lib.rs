//! shoal-sim: drives shoal-proto's state machines over a simulated network.
//!
//! A discrete-event simulator ([`net`]) runs one real
//! [`shoal_proto::swarm::Swarm`] per simulated node over a fluid network
//! model with scheduled faults ([`faults`]), from scenarios described in
//! TOML ([`scenario`]), and measures the result ([`outcome`]) against the
//! fluid lower bound on distribution time ([`fluid_lower_bound`]).
//! Tracker replicas run proto's peer-table CRDT over the same network
//! ([`replication`]). See `simulations/README.md`.
//!
//! Invariant: nothing here reads a clock (except to report wall time),
//! the OS's randomness or a hash map's iteration order, so a run is a
//! pure function of its scenario.

mod connect;
mod discovery;
pub mod faults;
mod flows;
pub mod net;
pub mod outcome;
mod part;
pub mod plot;
pub mod queue;
mod regions;
pub mod replication;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod setup;
mod worker;

/// Capacities of a distribution, in bytes per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacities {
    /// The seed's upload capacity.
    pub seed_up: f64,
    /// Each downloader's upload capacity.
    pub uploads: Vec<f64>,
    /// Each downloader's download capacity.
    pub downloads: Vec<f64>,
}

/// The fluid lower bound on the time for every downloader to hold a file
/// of `file_bytes`:
/// `T_min = max(F/u_seed, F/d_min, N·F/(u_seed + Σu_i))`.
/// The seed must send every byte at least once, the slowest downloader
/// must receive every byte, and all N copies must be uploaded by someone.
pub fn fluid_lower_bound(file_bytes: f64, c: &Capacities) -> f64 {
    let n = c.downloads.len() as f64;
    let d_min = c.downloads.iter().copied().fold(f64::INFINITY, f64::min);
    let total_up = c.seed_up + c.uploads.iter().sum::<f64>();
    (file_bytes / c.seed_up)
        .max(file_bytes / d_min)
        .max(n * file_bytes / total_up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_picks_the_binding_constraint() {
        let f = 1000.0;
        // Seed-limited: a slow seed with fast peers.
        let seed_bound = Capacities {
            seed_up: 10.0,
            uploads: vec![1000.0; 4],
            downloads: vec![1000.0; 4],
        };
        assert_eq!(fluid_lower_bound(f, &seed_bound), 100.0);
        // Download-limited: one slow downloader.
        let slow = Capacities {
            seed_up: 1000.0,
            uploads: vec![1000.0; 4],
            downloads: vec![1000.0, 1000.0, 5.0, 1000.0],
        };
        assert_eq!(fluid_lower_bound(f, &slow), 200.0);
        // Upload-limited: peers that cannot upload at all.
        let leech = Capacities {
            seed_up: 100.0,
            uploads: vec![0.0; 9],
            downloads: vec![1e9; 9],
        };
        assert_eq!(fluid_lower_bound(f, &leech), 90.0);
    }
}
