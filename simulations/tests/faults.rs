//! Small versions of the fault scenarios with the properties they must
//! keep: corrupt peers are caught and no node completes with their data,
//! every node that stays finishes through churn and a partition without
//! waiting for crashes to be noticed, the
//! seed may leave once one copy exists, replicated tracker tables
//! converge after a heal, and faulty runs are deterministic too.

use shoal_sim::net::Sim;
use shoal_sim::outcome::Outcome;
use shoal_sim::replication;
use shoal_sim::run::run_scenario;
use shoal_sim::scenario::Scenario;
use shoal_sim::setup::Setup;

/// 200 leechers, 64 MiB in 1 MiB pieces; faults are appended.
const BASE: &str = r#"
name = "small"
seed = 3
nodes = 200
file_mib = 64
piece_kib = 1024
degree = 12
latency_ms = 1.0

[seeders]
up_mbps = 1000

[[class]]
up_mbps = 1000
down_mbps = 4000
"#;

/// BASE with `nodes` leechers, 0.1% loss on every path, 5% corrupt
/// peers, and a tenth leaving and a tenth crashing in 0.1-0.4 s; `extra`
/// adds lines to `[faults]`.
fn faulty(nodes: u32, extra: &str) -> String {
    format!(
        "{}\n[faults]\ncorrupt_fraction = 0.05\nleave_fraction = 0.1\ncrash_fraction = 0.1\nchurn_from_secs = 0.1\nchurn_until_secs = 0.4\ndetect_secs = 0.5\nredial_secs = 0.1\n{extra}",
        BASE.replace("nodes = 200", &format!("nodes = {nodes}"))
            .replace("[[class]]", "[[class]]\nloss = 0.001")
    )
}

fn run(text: &str) -> (Scenario, Outcome) {
    let s = Scenario::parse(text).unwrap();
    let out = run_scenario(&s).unwrap().0;
    (s, out)
}

#[test]
fn corrupt_peers_are_banned_and_no_node_completes_with_their_data() {
    let text = format!(
        "{BASE}\n[faults]\ncorrupt_fraction = 0.05\nseed_leaves_after_copy = true\nredial_secs = 0.05\n"
    );
    let (_, out) = run(&text);
    let corrupt: Vec<u32> = out
        .nodes
        .iter()
        .filter(|n| n.corrupt)
        .map(|n| n.node)
        .collect();
    assert_eq!(corrupt.len(), 10);
    assert!(out.all_completed(), "{:?}", out.completions_us());
    assert_eq!(out.dirty_completions(), 0);
    assert!(out
        .nodes
        .iter()
        .filter(|n| n.completed_us.is_some())
        .all(|n| n.clean));
    assert!(out.failed_pieces > 0, "no corrupt block was ever accepted");
    // Only corrupt peers are ever banned, and by honest nodes.
    assert!(!out.bans.is_empty());
    for &(by, whom) in &out.bans {
        assert!(corrupt.contains(&whom), "{whom} banned by {by}");
    }
    // The seed left once the leechers held a copy between them, and the
    // fleet still finished.
    assert!(out.seeds_left_us.is_some());
    println!(
        "corrupt: {} failed pieces, {} bans, ratio {:.3}",
        out.failed_pieces,
        out.bans.len(),
        out.ratio().unwrap()
    );
}

#[test]
fn every_staying_node_finishes_through_churn() {
    let text = format!(
        "{}\n[faults]\nleave_fraction = 0.15\ncrash_fraction = 0.15\nchurn_from_secs = 0.1\nchurn_until_secs = 0.5\ndetect_secs = 1.0\nredial_secs = 0.2\n",
        BASE.replace("latency_ms = 1.0", "latency_ms = 1.0\njoin_spread_secs = 0.3")
    );
    let (_, out) = run(&text);
    let left = out.nodes.iter().filter(|n| n.left_us.is_some()).count();
    let crashed = out.nodes.iter().filter(|n| n.crashed).count();
    assert_eq!((left, crashed), (60, 30));
    assert!(out.all_completed(), "{:?}", out.completions_us());
    assert_eq!(out.completions_us().len(), 140);
    println!("churn: ratio {:.3}", out.ratio().unwrap());
}

/// A fifth of the leechers crash while the seed still spreads distinct
/// pieces, noticed only after 5 s (more than twice the whole
/// distribution). Their firm claims on the seed's pieces, the seed's
/// slots and their unanswered endgame requests must not hold the swarm
/// until then (before: 3.27 × T_min, the fleet waiting for the detection).
#[test]
fn crashes_are_not_waited_for_until_they_are_noticed() {
    let text = format!(
        "{}\n[faults]\ncrash_fraction = 0.2\nchurn_from_secs = 0.05\nchurn_until_secs = 1.5\ndetect_secs = 5.0\nredial_secs = 0.2\n",
        BASE.replace("file_mib = 64", "file_mib = 256")
            .replace("piece_kib = 1024", "piece_kib = 4096")
    );
    let (_, out) = run(&text);
    assert_eq!(out.nodes.iter().filter(|n| n.crashed).count(), 40);
    assert!(out.all_completed(), "{:?}", out.completions_us());
    let ratio = out.ratio().unwrap();
    println!("crashes while spreading: ratio {ratio:.3}");
    assert!(ratio < 2.0, "ratio {ratio:.3}");
}

#[test]
fn a_partition_heals_and_the_tracker_replicas_converge() {
    let text = format!(
        "{}\n[faults]\ndetect_secs = 0.3\nredial_secs = 0.1\n[[faults.partition]]\nregions = [1]\nat_secs = 0.2\nheal_secs = 0.8\n\n[tracker]\nreplicas = [0, 0, 1]\nanti_entropy_secs = 0.2\n[[tracker.die]]\nreplica = 1\nat_secs = 0.5\n",
        BASE.replace(
            "latency_ms = 1.0",
            "regions = [[0.5, 10.0], [10.0, 0.5]]\njoin_spread_secs = 0.6"
        )
        .replace(
            "down_mbps = 4000\n",
            "down_mbps = 4000\n\n[[class]]\nup_mbps = 1000\ndown_mbps = 4000\nregion = 1\n"
        )
    );
    let (s, out) = run(&text);
    assert!(out.all_completed(), "{:?}", out.completions_us());
    let setup = Setup::from_scenario(&s).unwrap();
    let r = replication::run_for(&s, &setup, &out).unwrap();
    assert_eq!(r.live, 2);
    assert!(r.lost > 0, "the cut and the death lost nothing");
    assert!(r.announces >= 400, "{}", r.announces);
    let healed = r.after_heal_us[0].expect("replicas never agreed after the heal");
    assert!(r.converged_us.is_some());
    println!(
        "partition: agreed {:.3} s after the heal, converged {:.3} s after the last write",
        healed as f64 / 1e6,
        r.convergence_secs().unwrap()
    );
    // Same inputs, same replication.
    let again = replication::run_for(&s, &setup, &out).unwrap();
    assert_eq!(r, again);
}

#[test]
fn a_faulty_run_is_deterministic() {
    let text = faulty(80, "");
    let (_, a) = run(&text);
    let (_, b) = run(&text);
    assert_eq!(a, b);
    assert!(a.all_completed());
}

/// The two parts run on one thread or on two, every window: the same
/// faulty run (loss, churn, crashes, corrupt peers, a seed that leaves)
/// must come out identical either way, since each part reads nothing the
/// other changes inside a window.
#[test]
fn the_thread_count_does_not_change_a_run() {
    let text = faulty(120, "seed_leaves_after_copy = true\n");
    let setup = Setup::from_scenario(&Scenario::parse(&text).unwrap()).unwrap();
    let one = Sim::new(&setup).with_threads(1).run();
    let two = Sim::new(&setup).with_threads(2).with_parallel_from(0).run();
    assert!(one.all_completed());
    assert!(one.seeds_left_us.is_some(), "the seed left");
    assert!(one.nodes.iter().any(|n| n.crashed), "somebody crashed");
    assert_eq!(one, two);
}
