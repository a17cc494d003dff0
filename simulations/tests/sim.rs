//! Whole runs of the simulator over real swarms: a flash crowd near the
//! fluid bound, determinism, a heterogeneous fleet, downlinks shared with
//! slow senders, the shipped scenario files, a report that cannot be
//! written, and a swarm-level guard against the release-only miscompile
//! that once made builds disagree.

mod common;

use std::path::Path;

use common::{assert_within_downlinks, run, FLASH};
use shoal_proto::swarm::{Geometry, LeecherChoking, PeerKey, Swarm, SwarmConfig, Time};
use shoal_sim::scenario::Scenario;

#[test]
fn a_flash_crowd_finishes_within_1_2_t_min() {
    let out = run(FLASH);
    assert!(out.all_completed(), "{:?}", out.completions_us());
    assert_eq!(out.completions_us().len(), 200);
    let ratio = out.ratio().unwrap();
    let copies = out.seed_uploaded as f64 / out.file_bytes as f64;
    println!(
        "flash crowd: last {:.3} s, T_min {:.3} s, ratio {ratio:.3}, seed sent {copies:.3} copies",
        out.quantile_secs(1.0).unwrap(),
        out.t_min
    );
    assert!(ratio <= 1.2, "last completion {ratio:.3} x T_min");
    assert!(ratio >= 1.0, "faster than the fluid bound: {ratio:.3}");
    assert_within_downlinks(&out);
    // The seed sent every piece at least once and not much more.
    assert!((1.0..1.2).contains(&copies), "{copies}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let text = FLASH
        .replace("nodes = 200", "nodes = 60")
        .replace("file_mib = 256", "file_mib = 64");
    let a = run(&text);
    let b = run(&text);
    assert_eq!(a, b);
    let c = run(&text.replace("seed = 7", "seed = 8"));
    assert_ne!(a.completions_us(), c.completions_us());
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
    assert!(out.all_completed(), "{:?}", out.completions_us());
    let ratio = out.ratio().unwrap();
    println!("heterogeneous: ratio {ratio:.3}");
    assert_within_downlinks(&out);
    // The 100 Mbit/s downloaders bind T_min; everyone must finish within
    // a generous factor of it.
    assert!(ratio < 2.0, "ratio {ratio:.3}");
}

/// Every downlink is 100 Mbit/s and half the leechers upload at only
/// 10 Mbit/s: a receiver's slow senders are held far under its caps by
/// their own uplinks, and its fast ones must take what they leave. With
/// each downlink split equally among its flows (the model before stop
/// 18) the median finished at 2.78 × T_min; with the downlink
/// water-filled, at 1.66 (stop 19's caps; stop 18's shared level gave
/// 1.64 by over-filling downlinks).
#[test]
fn fast_senders_take_the_downlink_slow_ones_leave() {
    let text = r#"
name = "slow-uplinks"
seed = 1
nodes = 200
file_mib = 64
degree = 16
latency_ms = 1.0

[seeders]
up_mbps = 1000

[[class]]
up_mbps = 10
down_mbps = 100

[[class]]
up_mbps = 1000
down_mbps = 100
"#;
    let out = run(text);
    assert!(out.all_completed(), "{:?}", out.completions_us());
    let p50 = out.quantile_secs(0.5).unwrap() / out.t_min;
    println!("slow uplinks: p50 {p50:.3} x T_min");
    assert_within_downlinks(&out);
    assert!(p50 < 2.0, "median at {p50:.3} x T_min");
}

/// Uplinks as fast as downlinks, and barely enough of them: receivers
/// are fed by several senders each held by its own uplink, which is where
/// a downlink model that lets every held flow rise to one shared level
/// within a window over-filled downlinks. With stop 18's model 7 of these
/// 100 nodes finished sooner than their own 100 Mbit/s allow.
#[test]
fn symmetric_links_never_beat_a_downlink() {
    let text = r#"
name = "symmetric"
seed = 1
nodes = 100
file_mib = 256
degree = 16
latency_ms = 1.0

[seeders]
up_mbps = 1000

[[class]]
up_mbps = 100
down_mbps = 100
"#;
    let out = run(text);
    assert!(out.all_completed(), "{:?}", out.completions_us());
    assert_within_downlinks(&out);
    let ratio = out.ratio().unwrap();
    println!("symmetric: last {ratio:.3} x T_min");
    assert!(ratio >= 1.0, "faster than the fluid bound: {ratio:.3}");
}

#[test]
fn the_shipped_scenarios_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let names = [
        "flash-crowd.toml",
        "heterogeneous.toml",
        "churn.toml",
        "two-regions.toml",
        "tracker-partition.toml",
        "corrupt.toml",
        "inter-dc.toml",
        "symmetric.toml",
    ];
    for name in names {
        let s = Scenario::load(&dir.join(name)).unwrap();
        assert!(s.nodes > 0, "{name}");
        // They model the torrent `shoal create` would make of the file.
        assert_eq!(s.piece_kib, None, "{name} pins its piece length");
    }
    let hetero = Scenario::load(&dir.join("heterogeneous.toml")).unwrap();
    let mut rng = shoal_sim::rng::SplitMix::new(1);
    let specs = hetero.node_specs(&mut rng);
    assert_eq!(specs.len(), hetero.nodes + 1);
    let slow = specs.iter().filter(|n| !n.seed && n.up == 12.5e6).count();
    assert_eq!(slow, hetero.nodes / 3);
}

/// Without `piece_kib` a scenario's pieces are as long as `shoal create`
/// cuts the file into; an explicit length (or `--piece-kib`) still wins.
#[test]
fn pieces_default_to_the_length_shoal_create_cuts() {
    let auto = FLASH.replace("piece_kib = 1024\n", "");
    assert!(!auto.contains("piece_kib"));
    for (mib, kib) in [(256, 256), (1024, 1024), (4096, 4096), (51200, 16384)] {
        let s =
            Scenario::parse(&auto.replace("file_mib = 256", &format!("file_mib = {mib}"))).unwrap();
        assert_eq!(
            s.geometry_bytes().unwrap(),
            (mib << 20, kib << 10),
            "{mib} MiB"
        );
    }
    let pinned = Scenario::parse(FLASH).unwrap();
    assert_eq!(pinned.geometry_bytes().unwrap(), (256 << 20, 1024 << 10));
}

#[test]
fn bad_scenarios_are_refused() {
    assert!(Scenario::parse(&FLASH.replace("nodes = 200", "nodes = 0")).is_err());
    assert!(Scenario::parse(
        &FLASH.replace("up_mbps = 1000\n\n[[class]]", "up_mbps = -1\n\n[[class]]")
    )
    .is_err());
    assert!(Scenario::parse(&format!("{FLASH}\nregion_typo = 1\n")).is_err());
    assert!(Scenario::parse(&format!("{FLASH}\n[faults]\ncorrupt_fraction = 1.5\n")).is_err());
    for v in ["0", "-5", "nan"] {
        let bad_link = FLASH.replace(
            "latency_ms = 1.0",
            &format!("latency_ms = 1.0\ninter_region_mbps = {v}"),
        );
        assert!(Scenario::parse(&bad_link).is_err(), "{v}");
    }
    let bad_cut = "[faults]\n[[faults.partition]]\nregions = [3]\nat_secs = 1\nheal_secs = 2\n";
    assert!(Scenario::parse(&format!("{FLASH}\n{bad_cut}")).is_err());
    // A request larger than any peer serves (and than the wire carries)
    // would leave every node waiting: refused up front.
    let err = Scenario::parse(&format!("{FLASH}\n[swarm]\nblock_kib = 4096\n")).unwrap_err();
    assert!(err.to_string().contains("block_size"), "{err}");
    for bad in ["far_rtt_ms = -1", "far_rtt_ms = nan", "far_partials = 0"] {
        assert!(
            Scenario::parse(&format!("{FLASH}\n[swarm]\n{bad}\n")).is_err(),
            "{bad}"
        );
    }
    Scenario::parse(&format!("{FLASH}\n[swarm]\nfar_rtt_ms = 0\n")).unwrap();
    for zero in ["choke_interval_ms = 0", "optimistic_interval_ms = 0"] {
        assert!(
            Scenario::parse(&format!("{FLASH}\n[swarm]\n{zero}\n")).is_err(),
            "{zero}"
        );
    }
}

/// The choking rounds' intervals reach every node's swarm.
#[test]
fn choke_intervals_are_set_from_the_scenario() {
    let s = Scenario::parse(&format!(
        "{FLASH}\n[swarm]\nchoke_interval_ms = 1000\noptimistic_interval_ms = 3000\n"
    ))
    .unwrap();
    let c = s.swarm_config();
    assert_eq!(c.choke_interval, std::time::Duration::from_secs(1));
    assert_eq!(c.optimistic_interval, std::time::Duration::from_secs(3));
    let d = Scenario::parse(FLASH).unwrap().swarm_config();
    assert_eq!(
        d.optimistic_interval,
        SwarmConfig::default().optimistic_interval
    );
}

#[test]
fn leecher_choking_is_set_from_the_scenario() {
    let s = Scenario::parse(&format!(
        "{FLASH}\n[swarm]\nleecher_choking = \"furthest-behind\"\n"
    ))
    .unwrap();
    assert_eq!(
        s.swarm_config().leecher_choking,
        LeecherChoking::FurthestBehind
    );
    let d = Scenario::parse(FLASH).unwrap().swarm_config();
    assert_eq!(d.leecher_choking, SwarmConfig::default().leecher_choking);
    assert!(Scenario::parse(&format!(
        "{FLASH}\n[swarm]\nleecher_choking = \"fastest\"\n"
    ))
    .is_err());
}

#[test]
fn late_joiners_and_two_seeders_complete() {
    let text = FLASH
        .replace("nodes = 200", "nodes = 20\njoin_spread_secs = 1.0")
        .replace("file_mib = 256", "file_mib = 32")
        .replace("[seeders]", "[seeders]\ncount = 2");
    let out = run(&text);
    assert!(out.all_completed(), "{:?}", out.completions_us());
    assert_eq!(out.completions_us().len(), 20);
    for n in &out.nodes {
        assert!(n.completed_us.unwrap() > n.join_us, "{n:?}");
    }
    // T_min ignores join times; the last joiner arrives up to 1 s late.
    let last = out.quantile_secs(1.0).unwrap();
    assert!(
        last < 1.0 + 5.0 * out.t_min,
        "{last} s, T_min {}",
        out.t_min
    );
}

/// A peer's piece count must follow its `Have`s. rustc 1.95.0 at
/// opt-level 3 once compiled the swarm's bitset insert so that the count
/// stayed 0 (see `proto/src/swarm/bitset.rs`); this only fails under
/// `cargo test --release`, which is how the simulator found it.
#[test]
fn peer_piece_counts_follow_haves() {
    let g = Geometry::new(128 << 20, 1 << 20).unwrap();
    let mut s = Swarm::new(g, &[0u8; 16], SwarmConfig::default(), 1).unwrap();
    let t = Time::from_micros(1000);
    let k = PeerKey(1);
    s.handle_peer_connected(t, k, true).unwrap();
    s.handle_have_none(t, k).unwrap();
    for p in [29, 3, 127, 64] {
        s.handle_have(t, k, std::hint::black_box(p)).unwrap();
    }
    s.handle_have(t, k, 3).unwrap();
    assert_eq!(s.peer_info(t, k).unwrap().pieces, 4);
}

#[test]
fn out_writes_the_csv_and_the_cdf_with_the_bound() {
    let text = FLASH
        .replace("nodes = 200", "nodes = 12")
        .replace("file_mib = 256", "file_mib = 16");
    let out = run(&text);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-out");
    shoal_sim::plot::write_outputs(&out, "small", &dir).unwrap();
    let csv = std::fs::read_to_string(dir.join("completions.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 13);
    assert!(lines[0].starts_with("node,region,"));
    // Every leecher completed, so every row has a completion time.
    for l in &lines[1..] {
        let completed = l.split(',').nth(5).unwrap();
        assert!(completed.parse::<f64>().unwrap() > 0.0, "{l}");
    }
    let svg = std::fs::read_to_string(dir.join("cdf.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(
        svg.contains(&format!("T_min = {:.3} s", out.t_min)),
        "no bound label"
    );
    assert!(svg.contains("<polyline"), "no curve");
}

/// Two regions joined by one 200 Mbit/s link each way, the seed in
/// region 0: every byte a region-1 node holds crossed that link at least
/// once, so no region-1 node can finish before F / 25 MB/s, however the
/// swarm spreads the pieces; without the link they finish far sooner.
#[test]
fn a_shared_inter_region_link_bounds_what_crosses_it() {
    let text = FLASH
        .replace("nodes = 200", "nodes = 60")
        .replace("file_mib = 256", "file_mib = 64")
        .replace("degree = 16", "degree = 8")
        .replace(
            "latency_ms = 1.0",
            "regions = [[0.5, 10.0], [10.0, 0.5]]\ninter_region_mbps = 200",
        )
        .replace(
            "down_mbps = 4000\n",
            "down_mbps = 4000\n\n[[class]]\nup_mbps = 1000\ndown_mbps = 4000\nregion = 1\n",
        );
    let first_in_region_1 = |out: &shoal_sim::outcome::Outcome| {
        out.nodes
            .iter()
            .filter(|n| n.region == 1)
            .filter_map(|n| n.completed_us)
            .min()
            .unwrap()
    };
    let out = run(&text);
    assert!(out.all_completed(), "{:?}", out.completions_us());
    let f = out.file_bytes as f64;
    let bound_us = (f / (200e6 / 8.0) * 1e6) as u64;
    let first = first_in_region_1(&out);
    let crossed = out.cross_region_bytes.unwrap() as f64 / f;
    let free = run(&text.replace("inter_region_mbps = 200", ""));
    println!(
        "link: region 1 first done at {:.3} s (bound {:.3} s), {crossed:.2} copies crossed; without it at {:.3} s",
        first as f64 / 1e6,
        bound_us as f64 / 1e6,
        first_in_region_1(&free) as f64 / 1e6
    );
    assert!(first >= bound_us, "region 1 finished before F crossed");
    assert!(crossed >= 1.0, "only {crossed:.2} copies crossed");
    assert!(first_in_region_1(&free) < bound_us);
}

/// The shipped `inter-dc` scenario, small: two data centres 20 ms apart
/// joined by one 10 Gbit/s link each way. With the swarm's locality rules
/// (`proto/src/swarm/near.rs`) far fewer copies cross the link and the
/// last node finishes sooner than with every peer treated as near.
#[test]
fn locality_keeps_pieces_a_region_has_off_the_shared_link() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let text = std::fs::read_to_string(dir.join("inter-dc.toml"))
        .unwrap()
        .replace("nodes = 200", "nodes = 120")
        // 4 MiB pieces, as the scale run's: with the 256 KiB that `shoal
        // create` cuts 128 MiB into, pieces spread inside a region fast
        // enough that every-peer-near sends only 26 copies across, not 43,
        // and locality's 16 is not half of that (benches/RESULTS.md).
        .replace("file_mib = 1024", "file_mib = 128\npiece_kib = 4096");
    let near = run(&text);
    let blind = run(&format!("{text}\n[swarm]\nfar_rtt_ms = 0\n"));
    let crossed = |o: &shoal_sim::outcome::Outcome| {
        o.cross_region_bytes.unwrap() as f64 / o.file_bytes as f64
    };
    let last = |o: &shoal_sim::outcome::Outcome| o.quantile_secs(1.0).unwrap();
    println!(
        "inter-dc, 120 nodes, 128 MiB: locality {:.2} copies crossed, last {:.3} s; \
         every peer near {:.2} copies, last {:.3} s",
        crossed(&near),
        last(&near),
        crossed(&blind),
        last(&blind)
    );
    assert!(near.all_completed() && blind.all_completed());
    assert!(
        crossed(&near) * 2.0 < crossed(&blind),
        "locality did not halve what crossed"
    );
    assert!(last(&near) < last(&blind), "locality made the run slower");
}

/// A report that cannot be written is not a panic, and costs no files:
/// with its reader gone the run ends as SIGPIPE would (status 141) after
/// writing `--out`'s files; on a full disk it says so (status 1).
#[test]
fn an_unwritable_report_is_not_a_panic() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-unwritable");
    // A previous run's files must not pass for this one's.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("small.toml");
    let text = FLASH
        .replace("nodes = 200", "nodes = 20")
        .replace("file_mib = 256", "file_mib = 16");
    std::fs::write(&scenario, text).unwrap();
    let sim = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_shoal-sim"));
        c.arg("run").arg(&scenario);
        c
    };
    let files = dir.join("out");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = sim()
        .arg("--out")
        .arg(&files)
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(err.is_empty(), "{err}");
    let csv = std::fs::read_to_string(files.join("completions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 21, "{csv}");
    assert!(files.join("cdf.svg").exists());

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = sim().stdout(full).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write the report"), "{err}");
}
