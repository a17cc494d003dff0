//! Stock BitTorrent clients swarming through shoal's tracker facade.
//!
//! aria2c and Transmission take a torrent made by `shoal create` whose
//! announce URLs point at `shoal tracker` processes, find each other
//! through them, and move real data; every download is compared byte for
//! byte with the original. The last test kills the first-tier tracker in
//! the middle of the transfers and checks that clients carry on through
//! the replicas.
//!
//! Everything runs on 127.0.0.1. The clients have DHT, local peer
//! discovery, peer exchange, UPnP/NAT-PMP and uTP turned off (see
//! `common::clients`), so the tracker is the only way a client can learn
//! of a peer. Trackers ask for announces every 2 s so clients come back
//! quickly; waits poll for a condition with a deadline and never sleep for
//! readiness. Every process is killed when its wrapper drops, so a failing
//! test leaves nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::clients::{assert_same_bytes, bytes_on_disk, poll_until, Aria2, Transmission};
use common::node::{pct, NodeOpts, NodeProc};
use common::{run_ok, shoal, show_json, tempdir, write_data};

/// Announce every 2 s (at least 1 s apart): clients come back quickly.
const FAST_TRACKER: &str = "[tracker]\ninterval_secs = 2\nmin_interval_secs = 1\n";
/// Replicate quickly between tracker nodes.
const FAST_GOSSIP: &str = "[gossip]\nbatch_ms = 50\nanti_entropy_secs = 1\n";

/// Makes a torrent of `data` at `out` with one tier per URL in
/// `trackers`; returns its infohash in hex.
fn make_torrent(data: &Path, out: &Path, trackers: &[String]) -> String {
    let mut cmd = shoal();
    cmd.arg("create").arg(data).arg("-o").arg(out);
    for t in trackers {
        cmd.arg("-t").arg(t);
    }
    run_ok(&mut cmd);
    let v = show_json(&out.to_string_lossy());
    let tiers: Vec<Vec<String>> = serde_json::from_value(v["trackers"].clone()).unwrap();
    let want: Vec<Vec<String>> = trackers.iter().map(|t| vec![t.clone()]).collect();
    assert_eq!(tiers, want, "one tier per tracker, in order");
    v["info_hash"].as_str().unwrap().to_owned()
}

/// Starts a tracker node in `dir` with fast announce intervals.
fn tracker(dir: &Path, join: Vec<std::net::SocketAddr>) -> NodeProc {
    NodeProc::start(
        dir,
        &NodeOpts {
            tracker: true,
            join,
            extra_config: format!("{FAST_TRACKER}{FAST_GOSSIP}"),
            ..NodeOpts::default()
        },
    )
}

/// `/stats?format=json` of a node, or the error as text when it does not
/// answer (for failure reports about a node that may be dead).
fn stats_text(node: &NodeProc) -> String {
    if let Err(e) = std::net::TcpStream::connect_timeout(&node.http, Duration::from_secs(2)) {
        return format!("{} does not answer: {e}", node.http);
    }
    let (status, body) = common::node::http_get(node.http, "/stats?format=json");
    format!("{status} {}", String::from_utf8_lossy(&body))
}

/// (seeders, leechers) a tracker node lists for `info_hash`.
fn swarm(node: &NodeProc, info_hash: &str) -> (u64, u64) {
    let v = node.stats();
    v["tracker"]["swarms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["info_hash"] == info_hash)
        .map_or((0, 0), |s| {
            (
                s["seeders"].as_u64().unwrap(),
                s["leechers"].as_u64().unwrap(),
            )
        })
}

/// Announces a tracker node has answered with peers.
fn announces(node: &NodeProc) -> u64 {
    node.stats()["tracker"]["announces"].as_u64().unwrap()
}

/// Announces and scrapes a tracker node has refused.
fn failures(node: &NodeProc) -> u64 {
    node.stats()["tracker"]["failures"].as_u64().unwrap()
}

/// Gossip peers a node is connected to.
fn gossip_connected(node: &NodeProc) -> usize {
    node.stats()["replication"]["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["connected"] == true)
        .count()
}

/// Ports of the peers `node` hands out for `info_hash`, asked by a probe
/// announce (as a leecher on a port where nobody listens) that is
/// withdrawn with `stopped` at once.
fn listed_ports(node: &NodeProc, info_hash: &str) -> Vec<u16> {
    let ih: Vec<u8> = (0..20)
        .map(|i| u8::from_str_radix(&info_hash[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let port = common::clients::free_port();
    let query = |event: &str| {
        format!(
            "/announce?info_hash={}&peer_id=-XP0001-probe-000001&port={port}&uploaded=0&downloaded=0&left=1&compact=1&numwant=200&event={event}",
            pct(&ih)
        )
    };
    let (status, body) = node.get(&query("started"));
    let _ = node.get(&query("stopped"));
    assert_eq!(status, 200, "probe announce to {}", node.http);
    let v = shoal_proto::bencode::decode(&body)
        .unwrap_or_else(|e| panic!("probe announce answer is not bencode ({e}): {body:?}"));
    let peers = v
        .as_dict()
        .and_then(|d| d.get(b"peers".as_slice()))
        .and_then(|p| p.as_bytes())
        .unwrap_or_else(|| panic!("no compact peers in {}", String::from_utf8_lossy(&body)));
    peers
        .chunks(6)
        .map(|p| u16::from_be_bytes([p[4], p[5]]))
        .collect()
}

/// A seed directory holding `image.bin` of `len` generated bytes, and a
/// torrent of it announcing to `trackers` (one tier each).
struct Content {
    seed_dir: PathBuf,
    original: PathBuf,
    torrent: PathBuf,
    info_hash: String,
    len: u64,
}

fn content(work: &Path, len: usize, seed: u64, trackers: &[String]) -> Content {
    let seed_dir = work.join("seed");
    let original = seed_dir.join("image.bin");
    write_data(&original, len, seed);
    let torrent = work.join("image.torrent");
    let info_hash = make_torrent(&original, &torrent, trackers);
    Content {
        seed_dir,
        original,
        torrent,
        info_hash,
        len: len as u64,
    }
}

/// Waits until `node` lists at least `seeders` seeders for the torrent.
fn wait_seeders(
    node: &NodeProc,
    c: &Content,
    seeders: u64,
    within: Duration,
    dump: impl FnOnce() -> String,
) {
    poll_until(
        within,
        &format!("{seeders} seeder(s) on the tracker at {}", node.http),
        || (swarm(node, &c.info_hash).0 >= seeders).then_some(()),
        || format!("{}\n--- tracker stats: {}", dump(), stats_text(node)),
    );
}

/// Waits (at most `within`) for an aria2c download to exit; panics with
/// `dump` unless it exits with status 0.
fn wait_download(d: &mut Aria2, within: Duration, dump: impl FnOnce() -> String) {
    let Some(status) = d.wait_exit(within) else {
        panic!(
            "timed out after {within:?} waiting for aria2c {} to finish\n{}{}",
            d.name,
            d.report(),
            dump()
        );
    };
    assert!(
        status.success(),
        "aria2c {} exited with {status}\n{}{}",
        d.name,
        d.report(),
        dump()
    );
}

/// aria2c seeds a file; a second aria2c finds it through the tracker and
/// downloads it; the bytes are identical.
#[test]
fn aria2_downloads_from_aria2_through_the_tracker() {
    let dir = tempdir();
    let work = dir.path();
    let t = tracker(&work.join("tracker"), vec![]);
    let c = content(work, 8 << 20, 1, &[t.announce_url()]);

    let seeder = Aria2::seed("seeder", work, &c.torrent, &c.seed_dir, &[]);
    wait_seeders(&t, &c, 1, Duration::from_secs(60), || seeder.report());

    let out_dir = work.join("leecher");
    let mut leecher = Aria2::download("leecher", work, &c.torrent, &out_dir, &[]);
    wait_download(&mut leecher, Duration::from_secs(90), || {
        format!("{}--- tracker stats: {}", seeder.report(), stats_text(&t))
    });
    assert_same_bytes(&c.original, &out_dir.join("image.bin"));
    assert!(announces(&t) >= 2, "tracker stats: {}", stats_text(&t));
    assert_eq!(
        failures(&t),
        0,
        "the tracker refused a client: {}",
        stats_text(&t)
    );
}

// Transmission 3.00 keys the peers it knows by IP address alone. With
// every client on 127.0.0.1 it takes them all for one peer: after it has
// downloaded from a seed on 127.0.0.1 it drops every later incoming
// connection from 127.0.0.1 as "another seed tried to reconnect to us".
// So each Transmission test uses a fresh daemon and one other client.

/// Transmission downloads from an aria2c seeder through the tracker; the
/// bytes are identical.
#[test]
fn transmission_downloads_from_aria2() {
    let dir = tempdir();
    let work = dir.path();
    let t = tracker(&work.join("tracker"), vec![]);
    let c = content(work, 8 << 20, 2, &[t.announce_url()]);

    let seeder = Aria2::seed("seeder", work, &c.torrent, &c.seed_dir, &[]);
    wait_seeders(&t, &c, 1, Duration::from_secs(60), || seeder.report());

    let tr = Transmission::start(work);
    tr.add(&c.torrent, &tr.download_dir);
    let got = tr.download_dir.join("image.bin");
    let want = std::fs::read(&c.original).unwrap();
    // Debian's Transmission 3.00 can idle for 10 s or more before it
    // dials its first peer; the deadline allows for that.
    let started = Instant::now();
    poll_until(
        Duration::from_secs(120),
        "Transmission to download the file from aria2c",
        || {
            let done = tr.percent_done(&c.info_hash)? >= 100.0;
            (done && std::fs::read(&got).ok()? == want).then_some(())
        },
        || {
            format!(
                "{}{}--- tracker stats: {}",
                tr.report(&c.info_hash),
                seeder.report(),
                stats_text(&t)
            )
        },
    );
    eprintln!("Transmission downloaded in {:?}", started.elapsed());
    assert_same_bytes(&c.original, &got);
    assert_eq!(
        failures(&t),
        0,
        "the tracker refused a client: {}",
        stats_text(&t)
    );
}

/// Transmission checks and seeds the original file; aria2c finds it
/// through the tracker and downloads it; the bytes are identical.
#[test]
fn aria2_downloads_from_transmission() {
    let dir = tempdir();
    let work = dir.path();
    let t = tracker(&work.join("tracker"), vec![]);
    let c = content(work, 8 << 20, 4, &[t.announce_url()]);

    let tr = Transmission::start(work);
    tr.add(&c.torrent, &c.seed_dir);
    wait_seeders(&t, &c, 1, Duration::from_secs(60), || {
        tr.report(&c.info_hash)
    });

    let out_dir = work.join("leecher");
    let mut d = Aria2::download("leecher", work, &c.torrent, &out_dir, &[]);
    wait_download(&mut d, Duration::from_secs(120), || {
        format!(
            "{}--- tracker stats: {}",
            tr.report(&c.info_hash),
            stats_text(&t)
        )
    });
    assert_same_bytes(&c.original, &out_dir.join("image.bin"));
    assert_eq!(
        failures(&t),
        0,
        "the tracker refused a client: {}",
        stats_text(&t)
    );
}

/// Three replicating trackers A, B and C, listed as three tiers. A seeder
/// (upload capped so the transfer takes a while) and two downloaders
/// start; once data is flowing, A is SIGKILLed. The downloaders finish
/// through B or C, and a downloader started after A's death (its first
/// tier is dead, and no DHT or PEX) finds the swarm through B or C. Every
/// copy is identical to the original.
#[test]
fn clients_fail_over_when_the_first_tracker_dies() {
    let dir = tempdir();
    let work = dir.path();
    let mut a = tracker(&work.join("a"), vec![]);
    let b = tracker(&work.join("b"), vec![a.gossip_addr]);
    let cc = tracker(&work.join("c"), vec![a.gossip_addr]);
    for n in [&a, &b, &cc] {
        poll_until(
            Duration::from_secs(30),
            &format!("tracker {} to connect to the other two", n.http),
            || (gossip_connected(n) >= 2).then_some(()),
            || stats_text(n),
        );
    }

    let len = 24 << 20;
    let c = content(
        work,
        len,
        3,
        &[a.announce_url(), b.announce_url(), cc.announce_url()],
    );
    let seeder = Aria2::seed(
        "seeder",
        work,
        &c.torrent,
        &c.seed_dir,
        &["--max-overall-upload-limit=3M"],
    );
    let mut downloads = vec![
        Aria2::download("d1", work, &c.torrent, &work.join("d1"), &[]),
        Aria2::download("d2", work, &c.torrent, &work.join("d2"), &[]),
    ];
    let reports = |downloads: &[Aria2]| -> String {
        let mut s = seeder.report();
        for d in downloads {
            s.push_str(&d.report());
        }
        s.push_str(&format!(
            "--- B stats: {}\n--- C stats: {}\n",
            stats_text(&b),
            stats_text(&cc)
        ));
        s
    };

    // Data is flowing to both downloaders, and the whole swarm (seeder and
    // two downloaders, all announcing to A) has reached B and C by gossip.
    poll_until(
        Duration::from_secs(60),
        "both downloads under way and the swarm replicated to B and C",
        || {
            let flowing = downloads
                .iter()
                .all(|d| bytes_on_disk(&d.dir.join("image.bin")) >= 1 << 20);
            let replicated = [&b, &cc].iter().all(|n| {
                let (s, l) = swarm(n, &c.info_hash);
                s >= 1 && s + l >= 3
            });
            (flowing && replicated).then_some(())
        },
        || format!("--- A stats: {}\n{}", stats_text(&a), reports(&downloads)),
    );
    let progress: Vec<u64> = downloads
        .iter()
        .map(|d| bytes_on_disk(&d.dir.join("image.bin")))
        .collect();
    assert!(
        progress.iter().any(|&p| p < c.len),
        "downloads finished before tracker A was killed ({progress:?} bytes); the failover would prove nothing"
    );
    let before = announces(&b) + announces(&cc);
    a.kill();
    let killed = Instant::now();
    eprintln!(
        "killed tracker A with downloads at {progress:?} bytes of {}",
        c.len
    );

    // A newcomer whose first tier is dead. It keeps seeding once done, so
    // B and C must go on listing it (it can announce only to them).
    let late_dir = work.join("late");
    let late = Aria2::start("late", work, &c.torrent, &late_dir, &["--seed-ratio=0.0"]);

    // B or C hears announces now that A is gone.
    poll_until(
        Duration::from_secs(30),
        "announces to B or C after A died",
        || (announces(&b) + announces(&cc) > before).then_some(()),
        || format!("{}{}", reports(&downloads), late.report()),
    );

    let deadline = Instant::now() + Duration::from_secs(90);
    for i in 0..downloads.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(status) = downloads[i].wait_exit(left) else {
            panic!(
                "aria2c {} did not finish within 90 s of A's death\n{}{}",
                downloads[i].name,
                reports(&downloads),
                late.report()
            );
        };
        assert!(
            status.success(),
            "aria2c {} exited with {status}\n{}",
            downloads[i].name,
            reports(&downloads)
        );
    }
    let late_file = late_dir.join("image.bin");
    let want = std::fs::read(&c.original).unwrap();
    poll_until(
        deadline.saturating_duration_since(Instant::now()),
        "the late downloader to hold the whole file",
        || {
            (bytes_on_disk(&late_file) >= c.len && std::fs::read(&late_file).ok()? == want)
                .then_some(())
        },
        || format!("{}{}", late.report(), reports(&downloads)),
    );
    eprintln!("all downloads done {:?} after A died", killed.elapsed());
    for d in &downloads {
        assert_same_bytes(&c.original, &d.dir.join("image.bin"));
    }
    assert_same_bytes(&c.original, &late_file);

    // The late downloader announced to B or C: they hand out its port.
    poll_until(
        Duration::from_secs(20),
        &format!("B or C to list the late downloader (port {})", late.port),
        || {
            [&b, &cc]
                .iter()
                .any(|n| listed_ports(n, &c.info_hash).contains(&late.port))
                .then_some(())
        },
        || format!("{}{}", late.report(), reports(&downloads)),
    );
    let after = announces(&b) + announces(&cc);
    assert!(after > before, "no announce reached B or C after A died");
    assert_eq!(
        failures(&b) + failures(&cc),
        0,
        "B or C refused a client:\n{}",
        reports(&downloads)
    );
}
