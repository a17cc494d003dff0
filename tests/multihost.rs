//! A distribution across hosts: a `shoal tracker`, a `shoal seed` and
//! four `shoal fetch` processes, each on a host of its own (a network
//! namespace from `tests/netns/lab.sh`, on 198.18.2.0/24), every link
//! shaped by `tc tbf` to 50 Mbit/s each way. Every node must finish within
//! a deadline with a byte-identical copy; the test prints each node's time
//! and the last one's ratio to the fluid lower bound T_min.
//!
//! Needs root, `ip netns` and `tc`; without them it prints why and passes
//! without running (CI runs it as root). Every namespace, and every
//! process in one, is removed by a guard even when the test fails.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::clients::assert_same_bytes;
use common::netns::{lab_unavailable, HostProc, Lab};
use common::node::{NodeOpts, NodeProc};
use common::write_data;

/// Link rate each way, in bits per second, and as tc spells it.
const RATE_BPS: f64 = 50e6;
const RATE_TC: &str = "50mbit";
/// Nodes that fetch (besides the seed).
const NODES: usize = 4;
/// The file: 32 MiB and a bit, so the last piece is short.
const SIZE: usize = 32 * 1024 * 1024 + 4321;
/// Most time from starting the fetches to the last verified copy. T_min
/// is 5.4 s; a debug build hashing and encrypting on a shared 2-core
/// machine takes several times that.
const DEADLINE: Duration = Duration::from_secs(45);

#[test]
fn one_seed_four_nodes_on_shaped_links() {
    if let Some(why) = lab_unavailable() {
        println!("SKIPPED multihost: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Host 1: tracker; host 2: seed; hosts 3..: nodes. Declared first, so
    // dropped last: the processes die before their namespaces go.
    let lab = Lab::up("mh", 2 + NODES, RATE_TC);
    assert_eq!(lab.listed().len(), 2 + NODES + 1, "{:?}", lab.listed());

    let tracker = NodeProc::start(
        &root.join("tracker"),
        &NodeOpts {
            tracker: true,
            http: Some(SocketAddr::from((lab.addr(1), 0))),
            gossip: Some(SocketAddr::from((lab.addr(1), 0))),
            wrapper: lab.wrapper(1),
            ..NodeOpts::default()
        },
    );
    assert_eq!(tracker.http.ip(), lab.addr(1));

    let data = root.join("src").join("image.bin");
    write_data(&data, SIZE, 7);
    let torrent = root.join("image.torrent");
    let bin = env!("CARGO_BIN_EXE_shoal");
    let mut seed = HostProc::spawn(
        "seed",
        lab.command(2, bin)
            .env("RUST_LOG", "warn,shoal=info")
            .arg("seed")
            .arg(&data)
            .arg("-o")
            .arg(&torrent)
            .arg("-t")
            .arg(tracker.announce_url())
            .arg("--data-dir")
            .arg(root.join("seed-data"))
            .arg("--listen")
            .arg(format!("{}:0", lab.addr(2))),
        &root.join("seed.log"),
    );
    let (seed_at, _) = seed
        .line("listening on ", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        seed_at.starts_with(&format!("{}:", lab.addr(2))),
        "{seed_at}"
    );

    let start = Instant::now();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let host = 3 + i;
        let name = format!("node{i}");
        let p = HostProc::spawn(
            &name,
            lab.command(host, bin)
                .env("RUST_LOG", "warn,shoal=info")
                .arg("fetch")
                .arg(&torrent)
                .arg("-o")
                .arg(root.join(format!("out{i}")))
                .arg("--data-dir")
                .arg(root.join(format!("{name}-data")))
                .arg("--listen")
                .arg(format!("{}:0", lab.addr(host)))
                // Stays up after its copy is verified, serving the others,
                // until the test ends.
                .arg("--seed-for")
                .arg("300s"),
            &root.join(format!("{name}.log")),
        );
        nodes.push(p);
    }
    let deadline = start + DEADLINE;
    let mut times = Vec::new();
    for p in &mut nodes {
        let left = deadline.saturating_duration_since(Instant::now());
        let (path, at) = p
            .line("complete ", left)
            .unwrap_or_else(|e| panic!("{e}\n(deadline {DEADLINE:?} from starting the fetches)"));
        assert!(path.ends_with("image.bin"), "{}: {path}", p.name);
        times.push(at.duration_since(start));
    }

    for i in 0..NODES {
        assert_same_bytes(&data, &root.join(format!("out{i}")).join("image.bin"));
    }
    // Equal links: T_min = max(F/u_seed, F/d, N*F/(u_seed + N*u)) = F/u.
    let t_min = SIZE as f64 * 8.0 / RATE_BPS;
    let last = times.iter().max().unwrap().as_secs_f64();
    let each: Vec<String> = times
        .iter()
        .map(|t| format!("{:.2}s", t.as_secs_f64()))
        .collect();
    println!(
        "{NODES} nodes over {RATE_TC} links, {:.1} MiB: each done at {}; last {last:.2}s, \
         T_min {t_min:.2}s, ratio {:.2}",
        SIZE as f64 / (1 << 20) as f64,
        each.join(", "),
        last / t_min
    );
    for p in &mut nodes {
        assert!(p.exited().is_none(), "{} left while seeding", p.name);
    }

    let names = lab.listed();
    drop(nodes);
    drop(seed);
    drop(tracker);
    drop(lab);
    let after: Vec<String> = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    for n in &names {
        assert!(!after.contains(n), "{n} still exists after the lab's drop");
    }
}
