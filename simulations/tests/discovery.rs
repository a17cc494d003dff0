//! Runs with `discovery = "tracker"`: nodes find each other through
//! proto's peer books, a proto tracker table and PEX, as the daemon does.
//! A flash crowd still finishes near the bound with every node inside the
//! book's connection bound; faults (loss, churn, crashes, corrupt peers,
//! the seed leaving, a partition and its heal) are survived; runs stay
//! deterministic and independent of the thread count.

mod common;

use common::{assert_within_downlinks, run, FLASH};
use shoal_proto::discovery::BookConfig;
use shoal_sim::net::Sim;
use shoal_sim::scenario::Scenario;
use shoal_sim::setup::Setup;

/// `tests/sim.rs`'s flash crowd (200 leechers, 256 MiB), peers found the
/// daemon's way.
fn flash() -> String {
    FLASH.replace("degree = 16", "discovery = \"tracker\"")
}

/// `text` with two regions 10 ms apart (0.5 ms within) and a second
/// class of leechers, as many as the first, in region 1.
fn two_regions(text: String) -> String {
    text.replace("latency_ms = 1.0", "regions = [[0.5, 10.0], [10.0, 0.5]]")
        .replace(
            "down_mbps = 4000\n",
            "down_mbps = 4000\n\n[[class]]\nup_mbps = 1000\ndown_mbps = 4000\nregion = 1\n",
        )
}

#[test]
fn peer_books_meet_within_their_bound_and_finish_a_flash_crowd() {
    let out = run(&flash());
    assert!(out.all_completed(), "{:?}", out.completions_us());
    assert_within_downlinks(&out);
    let ratio = out.ratio().unwrap();
    let bound = BookConfig::default();
    let peaks: Vec<u32> = out.nodes.iter().map(|n| n.peak_conns).collect();
    let most = *peaks.iter().max().unwrap() as usize;
    let least = *peaks.iter().min().unwrap() as usize;
    println!(
        "tracker discovery: ratio {ratio:.3}, connections {least}..{most}, seed {}, dials {:?}",
        out.seed_peak_conns, out.dials
    );
    // The same crowd on a random graph of degree 16 ends at 1.147; early
    // announcers cluster around the seed here (see the README).
    assert!(ratio <= 1.25, "last completion {ratio:.3} x T_min");
    // Every node dialled up to max_peers (or was dialled to it), and
    // nobody, the seed included, went past the inbound bound.
    assert!(
        least >= bound.max_peers,
        "a node peaked at {least} connections"
    );
    assert!(most <= bound.max_connections, "a node peaked at {most}");
    assert!(out.seed_peak_conns as usize <= bound.max_connections);
    assert!(out.seed_peak_conns > 0, "nobody found the seed");
    // Complete nodes do not dial each other: dials stay within a few per
    // node (graph runs make none).
    let (dials, refused) = out.dials;
    assert!(dials > 0 && dials < 200 * 50, "{dials} dials");
    assert!(refused < dials, "{refused} of {dials} dials refused");
}

#[test]
fn tracker_discovery_is_deterministic_on_any_thread_count() {
    let text = format!(
        "{}\n[faults]\ncorrupt_fraction = 0.05\nleave_fraction = 0.1\ncrash_fraction = 0.1\nchurn_from_secs = 0.1\nchurn_until_secs = 0.4\ndetect_secs = 0.5\nseed_leaves_after_copy = true\n",
        flash()
            .replace("nodes = 200", "nodes = 120")
            .replace("file_mib = 256", "file_mib = 48")
            .replace("[[class]]", "[[class]]\nloss = 0.001")
    );
    let setup = Setup::from_scenario(&Scenario::parse(&text).unwrap()).unwrap();
    let one = Sim::new(&setup).with_threads(1).run();
    let two = Sim::new(&setup).with_threads(2).with_parallel_from(0).run();
    assert!(one.all_completed(), "{:?}", one.completions_us());
    assert!(one.seeds_left_us.is_some(), "the seed left");
    assert!(one.nodes.iter().any(|n| n.crashed), "somebody crashed");
    assert!(one.failed_pieces > 0, "no corrupt piece was caught");
    assert_eq!(one.dirty_completions(), 0);
    assert_eq!(one, two);
    let again = Sim::new(&setup).with_threads(2).run();
    assert_eq!(one, again);
}

/// Region 1 is cut off from 0.2 s to 1.5 s, longer than the whole
/// distribution would take: its nodes lose every path to the seed's
/// region, their books' dials across fail and back off, and after the
/// heal the retries find the other side again so that region 1 finishes.
#[test]
fn after_a_partition_books_find_the_other_side_again() {
    let text = format!(
        "{}\n[faults]\ndetect_secs = 0.3\n[[faults.partition]]\nregions = [1]\nat_secs = 0.2\nheal_secs = 1.5\n",
        two_regions(flash().replace("nodes = 200", "nodes = 100"))
    );
    let out = run(&text);
    assert!(out.all_completed(), "{:?}", out.completions_us());
    let last = |region: usize| {
        out.nodes
            .iter()
            .filter(|n| n.region == region)
            .filter_map(|n| n.completed_us)
            .max()
            .unwrap()
    };
    println!(
        "partition: region 0 done at {:.3} s, region 1 at {:.3} s",
        last(0) as f64 / 1e6,
        last(1) as f64 / 1e6
    );
    assert!(last(1) > 1_500_000, "region 1 finished during the cut");
}

/// Two replicas in the seed's region; the first dies at 0.3 s while
/// leechers still join. Every node tries the first replica first, so its
/// next announce is refused there and applied by the second, which
/// already holds the earlier ones (deltas) and from then on comes first
/// in that node's list; the crowd finishes.
/// The same on one thread and on two.
#[test]
fn announces_fail_over_to_the_next_replica_when_one_dies() {
    let text = format!(
        "{}\n[tracker]\nreplicas = [0, 0]\nanti_entropy_secs = 0.2\n[[tracker.die]]\nreplica = 0\nat_secs = 0.3\n",
        flash()
            .replace("nodes = 200", "nodes = 60")
            .replace("file_mib = 256", "file_mib = 32")
            .replace(
                "discovery = \"tracker\"",
                "discovery = \"tracker\"\njoin_spread_secs = 0.6"
            )
    );
    let setup = Setup::from_scenario(&Scenario::parse(&text).unwrap()).unwrap();
    let out = Sim::new(&setup).with_threads(1).run();
    assert!(out.all_completed(), "{:?}", out.completions_us());
    let r = out
        .replication
        .clone()
        .expect("the nodes announced to replicas");
    let late = out.nodes.iter().filter(|n| n.join_us > 300_000).count() as u64;
    println!(
        "failover: applied {:?}, {} failed attempts, {late} late joiners",
        r.applied_by, r.failed_attempts
    );
    assert!(late > 10, "only {late} nodes joined after the death");
    assert!(r.applied_by[0] > 0, "nobody announced before the death");
    // Each late joiner's `started` (and each later announce) was refused
    // by the dead replica and taken by the live one.
    assert!(
        r.failed_attempts >= late,
        "{} failed attempts",
        r.failed_attempts
    );
    assert!(r.applied_by[1] >= late, "{:?}", r.applied_by);
    // The replica that answered moved to the front of the node's list
    // (proto's `Tiers`), so no node tried the dead one twice.
    let nodes = out.nodes.len() as u64 + 1;
    assert!(
        r.failed_attempts <= nodes,
        "{} failed attempts",
        r.failed_attempts
    );
    assert_eq!(r.live, 1);
    assert!(r.converged_us.is_some());
    let two = Sim::new(&setup).with_threads(2).with_parallel_from(0).run();
    assert_eq!(out, two);
}

/// The only replica is in region 0, and region 1 is cut off for the
/// first 2 s. Region 1's nodes announce into the cut: each attempt fails
/// only when the announcer's 10 s timeout runs out, and with no other
/// replica to try they wait its 15 s retry. Nobody else knows them, so
/// they start only then, while region 0 finishes at once.
#[test]
fn a_region_cut_off_from_every_replica_waits_out_the_announcers_timeout_and_retry() {
    let text = format!(
        "{}\n[faults]\ndetect_secs = 0.3\n[[faults.partition]]\nregions = [1]\nat_secs = 0.0\nheal_secs = 2.0\n\n[tracker]\nreplicas = [0]\n",
        two_regions(
            flash()
                .replace("nodes = 200", "nodes = 40")
                .replace("file_mib = 256", "file_mib = 16")
                .replace(
                    "discovery = \"tracker\"",
                    "discovery = \"tracker\"\nmax_sim_secs = 60.0"
                )
        )
    );
    let out = run(&text);
    assert!(out.all_completed(), "{:?}", out.completions_us());
    let done = |region: usize| -> Vec<u64> {
        out.nodes
            .iter()
            .filter(|n| n.region == region)
            .filter_map(|n| n.completed_us)
            .collect()
    };
    let (zero, one) = (done(0), done(1));
    assert!(!zero.is_empty() && !one.is_empty());
    let r = out
        .replication
        .clone()
        .expect("the nodes announced to the replica");
    println!(
        "cut off: region 0 done by {:.3} s, region 1 from {:.3} s; {} failed attempts",
        *zero.iter().max().unwrap() as f64 / 1e6,
        *one.iter().min().unwrap() as f64 / 1e6,
        r.failed_attempts
    );
    assert!(zero.iter().all(|&t| t < 10_000_000), "{zero:?}");
    assert!(one.iter().all(|&t| t >= 25_000_000), "{one:?}");
    assert!(r.failed_attempts >= one.len() as u64);
}
