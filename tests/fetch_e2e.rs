//! The one-shot commands end to end, as separate processes on 127.0.0.1:
//! a real `shoal tracker`, a `shoal seed` that makes the torrent for a
//! generated file, and two `shoal fetch` processes that find the seed (and
//! each other) through the tracker, verify the data, run their
//! `--on-complete` hook and exit 0. The torrent's first tracker tier is a
//! dead address, so every announce goes through BEP 12 fail-over.
//!
//! Readiness is read from each process's stdout ("listening on ..."), with
//! deadlines; every process is killed if the test fails.

mod common;

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use common::node::{parse_scrape, scrape_query, NodeOpts, NodeProc};
use common::proc::Proc;
use common::{s, shoal, tempdir, write_data};

/// Asserts that `p` ended with `status` successfully.
fn assert_ok(p: &Proc, status: ExitStatus) {
    assert!(
        status.success(),
        "{} exited with {status}\n{}",
        p.name,
        p.output()
    );
}

/// A `shoal tracker` on 127.0.0.1.
fn start_tracker(root: &Path) -> NodeProc {
    NodeProc::start(
        &root.join("tracker"),
        &NodeOpts {
            tracker: true,
            ..NodeOpts::default()
        },
    )
}

/// `shoal SUB` (seed or fetch) with its state in `data_dir`, listening
/// on 127.0.0.1 port 0.
fn one_shot(sub: &str, data_dir: &Path) -> Command {
    let mut cmd = shoal();
    cmd.arg(sub)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"]);
    cmd
}

fn hex20(h: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// (seeders, leechers) the tracker lists for `ih`.
fn swarm_counts(tracker: &NodeProc, ih: &[u8; 20]) -> (i64, i64) {
    let (code, body) = tracker.get(&format!("/scrape?{}", scrape_query(&[*ih])));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let counts = parse_scrape(&body).unwrap();
    counts.get(ih).map_or((0, 0), |c| (c.0, c.1))
}

#[test]
fn seed_and_two_fetches_through_a_real_tracker() {
    let dir = tempdir();
    let root = dir.path();
    let tracker = start_tracker(root);
    let data = root.join("src").join("image.bin");
    write_data(&data, 5 * 1024 * 1024 + 12345, 42);
    let torrent = root.join("image.torrent");
    // A first tier nobody answers: every announce must fail over to the
    // real tracker in the second tier.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let seed = Proc::spawn(
        "seed",
        one_shot("seed", &root.join("seed-data"))
            .arg(&data)
            .arg("-o")
            .arg(&torrent)
            .arg("-t")
            .arg(format!("http://{dead}/announce"))
            .arg("-t")
            .arg(tracker.announce_url()),
        &root.join("seed.log"),
    );
    let infohash = seed.line("infohash ", Duration::from_secs(60));
    let seed_addr = seed.line("listening on ", Duration::from_secs(30));
    assert!(seed_addr.starts_with("127.0.0.1:"), "{seed_addr}");
    assert_eq!(infohash.len(), 40, "{infohash}");

    let mut fetches = Vec::new();
    for i in 0..2 {
        let hook = root.join(format!("hook{i}.txt"));
        let mut cmd = one_shot("fetch", &root.join(format!("fetch{i}-data")));
        cmd.arg(&torrent)
            .arg("-o")
            .arg(root.join(format!("out{i}")))
            .arg("--on-complete")
            .arg(format!(
                "printf '%s\\n%s\\n' \"$SHOAL_INFOHASH\" \"$SHOAL_PATH\" > '{}'",
                s(&hook)
            ));
        if i == 0 {
            cmd.arg("--seed-for").arg("2s");
        }
        let p = Proc::spawn(
            &format!("fetch{i}"),
            &mut cmd,
            &root.join(format!("fetch{i}.log")),
        );
        let addr = p.line("listening on ", Duration::from_secs(30));
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        fetches.push(p);
    }

    let want = std::fs::read(&data).unwrap();
    for (i, p) in fetches.iter().enumerate() {
        assert_ok(p, p.wait_exit(Duration::from_secs(120)));
        let out = root.join(format!("out{i}")).join("image.bin");
        let got = std::fs::read(&out).unwrap();
        assert!(got == want, "fetch{i}: output differs from the source");
        let hook = std::fs::read_to_string(root.join(format!("hook{i}.txt"))).unwrap();
        let lines: Vec<&str> = hook.lines().collect();
        assert_eq!(lines.len(), 2, "{hook:?}");
        assert_eq!(lines[0], infohash);
        let canonical = root
            .join(format!("out{i}"))
            .canonicalize()
            .unwrap()
            .join("image.bin");
        assert_eq!(Path::new(lines[1]), canonical);
    }

    // The fetches said `stopped` on their way out; the seed is the one
    // peer left, and it says `stopped` when terminated.
    let ih = hex20(&infohash);
    assert_eq!(
        swarm_counts(&tracker, &ih),
        (1, 0),
        "after the fetches left"
    );
    assert_ok(&seed, seed.terminate(Duration::from_secs(20)));
    assert_eq!(swarm_counts(&tracker, &ih), (0, 0), "after the seed left");
    drop(tracker);
}

/// A magnet link with only the infohash and a tracker: `shoal fetch`
/// finds the seed through the tracker, fetches the info dictionary from it
/// (checked against the infohash), then the data.
#[test]
fn magnet_fetch_completes_through_a_tracker_and_a_seed() {
    let dir = tempdir();
    let root = dir.path();
    let tracker = start_tracker(root);
    let data = root.join("src").join("image.bin");
    // Enough pieces that the info dictionary spans several 16 KiB
    // metadata pieces: 640 pieces of 32 KiB, 52 bytes of hashes each.
    write_data(&data, 20 * 1024 * 1024 + 777, 7);
    let torrent = root.join("image.torrent");
    common::run_ok(
        shoal()
            .arg("create")
            .arg(&data)
            .arg("-o")
            .arg(&torrent)
            .arg("--piece-size")
            .arg("32K")
            .arg("-t")
            .arg(tracker.announce_url()),
    );
    let meta = shoal_proto::Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    assert!(
        meta.info_bytes.len() > 2 * 16 * 1024,
        "info dictionary of {} bytes fits in fewer than three metadata pieces",
        meta.info_bytes.len()
    );
    let seed = Proc::spawn(
        "seed",
        one_shot("seed", &root.join("seed-data"))
            .arg(&data)
            .arg("--torrent")
            .arg(&torrent),
        &root.join("seed.log"),
    );
    let infohash = seed.line("infohash ", Duration::from_secs(60));
    seed.line("listening on ", Duration::from_secs(30));
    let magnet = format!(
        "magnet:?xt=urn:btih:{infohash}&dn=image.bin&tr={}",
        shoal_proto::magnet::percent_encode(&tracker.announce_url())
    );
    let fetch = Proc::spawn(
        "fetch",
        one_shot("fetch", &root.join("fetch-data"))
            .arg(&magnet)
            .arg("-o")
            .arg(root.join("out"))
            .args(["--magnet-timeout", "60s"]),
        &root.join("fetch.log"),
    );
    assert_eq!(fetch.line("infohash ", Duration::from_secs(90)), infohash);
    assert_ok(&fetch, fetch.wait_exit(Duration::from_secs(120)));
    let got = std::fs::read(root.join("out").join("image.bin")).unwrap();
    assert!(got == std::fs::read(&data).unwrap(), "output differs");
    assert_ok(&seed, seed.terminate(Duration::from_secs(20)));
}

/// A magnet link whose infohash no peer serves fails with a clear error
/// once its timeout has passed, not before and not much after.
#[test]
fn magnet_with_an_unknown_infohash_fails_clearly_within_its_timeout() {
    let dir = tempdir();
    let root = dir.path();
    let tracker = start_tracker(root);
    let magnet = format!(
        "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&tr={}",
        shoal_proto::magnet::percent_encode(&tracker.announce_url())
    );
    let started = Instant::now();
    let out = one_shot("fetch", &root.join("data"))
        .arg(&magnet)
        .arg("-o")
        .arg(root.join("out"))
        .args(["--magnet-timeout", "3s"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot resolve the magnet link"), "{err}");
    assert!(err.contains("no peer delivered the metadata"), "{err}");
    assert!(took >= Duration::from_secs(3), "gave up early: {took:?}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(!root.join("out").join("image.bin").exists());
}
