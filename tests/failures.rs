//! Real failures, with the real `shoal` binary against a real
//! `shoal tracker` on 127.0.0.1:
//! - crash and resume: `shoal fetch` is SIGKILLed mid-download, restarted
//!   on the same data and output directories, and fetches only what it had
//!   not verified before;
//! - a corrupt peer (a harness node built from the shoal library whose
//!   file is altered under its storage) is banned by `shoal fetch`, which
//!   completes from an honest `shoal seed`;
//! - disk full: a fetch into a tmpfs too small for the torrent fails fast
//!   with a clear error, and completes once the output has space (root
//!   only, for the mounts).
//!
//! Every wait has a deadline; a failure prints what every process printed.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mesh::{make_torrent, start, MeshNode};
use common::node::{announce_query, http_get, NodeOpts, NodeProc};
use common::proc::{field, is_root, Proc, Tmpfs};
use common::{s, shoal, tempdir, write_data};
use shoal::swarm::{PeerDial, Role};

const MIB: u64 = 1024 * 1024;

/// A tracker, a generated file at `root/src/image.bin` and its torrent
/// (announcing to the tracker) at `root/image.torrent`.
struct Swarm {
    tracker: NodeProc,
    data: PathBuf,
    torrent: PathBuf,
    meta: shoal_proto::Metainfo,
}

impl Swarm {
    fn new(root: &Path, len: u64) -> Swarm {
        let tracker = NodeProc::start(
            &root.join("tracker"),
            &NodeOpts {
                tracker: true,
                ..NodeOpts::default()
            },
        );
        let data = root.join("src").join("image.bin");
        write_data(&data, len as usize, 42);
        let meta = make_torrent(&data, None, vec![vec![tracker.announce_url()]]);
        let torrent = root.join("image.torrent");
        std::fs::write(&torrent, meta.to_bytes()).unwrap();
        Swarm {
            tracker,
            data,
            torrent,
            meta,
        }
    }

    fn pieces(&self) -> u64 {
        u64::from(self.meta.info.piece_count())
    }

    /// `shoal seed` of the file, waiting until it listens.
    fn seed(&self, root: &Path, extra: &[&str]) -> Proc {
        let seed = Proc::spawn(
            "seed",
            shoal()
                .arg("seed")
                .arg(&self.data)
                .arg("--torrent")
                .arg(&self.torrent)
                .arg("--data-dir")
                .arg(root.join("seed-data"))
                .arg("--listen")
                .arg("127.0.0.1:0")
                .args(extra),
            &root.join("seed.log"),
        );
        seed.line("listening on ", Duration::from_secs(60));
        seed
    }

    /// A `shoal fetch` command into `out` with its state in `data_dir`.
    fn fetch(&self, out: &Path, data_dir: &Path, extra: &[&str]) -> Command {
        let mut cmd = shoal();
        cmd.arg("fetch")
            .arg(&self.torrent)
            .arg("-o")
            .arg(out)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(extra);
        cmd
    }

    fn tracker_log(&self) -> String {
        format!("--- tracker log:\n{}", self.tracker.log_text())
    }
}

/// Everything every process printed, for a failure message.
fn outputs(procs: &[&Proc]) -> String {
    procs
        .iter()
        .map(|p| p.output())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `resuming: N of M pieces already verified` → (N, M).
fn resumed(p: &Proc) -> (u64, u64) {
    p.log_line(Duration::from_secs(30), "a resuming line", |l| {
        let rest = l.strip_prefix("resuming: ")?;
        let mut words = rest.split_whitespace();
        let n = words.next()?.parse().ok()?;
        let m = words.nth(1)?.parse().ok()?;
        Some((n, m))
    })
}

/// The `finished:` summary line.
fn finished(p: &Proc) -> String {
    p.log_line(Duration::from_secs(5), "a finished line", |l| {
        l.strip_prefix("finished: ").map(str::to_owned)
    })
}

fn same_file(want: &Path, got: &Path) -> bool {
    std::fs::read(want).unwrap() == std::fs::read(got).unwrap_or_default()
}

#[test]
fn sigkilled_fetch_resumes_without_refetching_verified_pieces() {
    let dir = tempdir();
    let root = dir.path();
    let sw = Swarm::new(root, 64 * MIB + 4321);
    let m = sw.pieces();
    let seed = sw.seed(root, &[]);
    let out = root.join("out");
    let state = root.join("fetch-data");

    // 8 MiB/s: the 64 MiB take about eight seconds.
    let first = Proc::spawn(
        "fetch (first run)",
        &mut sw.fetch(&out, &state, &["--max-download-rate", "8M"]),
        &root.join("fetch1.log"),
    );
    let (n0, m0) = resumed(&first);
    assert_eq!((n0, m0), (0, m), "a fresh data dir\n{}", first.output());
    // Partial progress, as storage reports it: pieces durable and marked.
    let (have, rate) = first.log_line(Duration::from_secs(60), "progress past 20%", |l| {
        let l = l.strip_prefix("progress ")?;
        let have = field(l, "have").filter(|h| *h >= m / 5)?;
        Some((have, field(l, "rate")?))
    });
    assert!(
        first.exited().is_none() && have < m,
        "the first run must still be downloading when it is killed (have {have} of {m})\n{}",
        first.output()
    );
    assert!(
        rate <= 10 * MIB,
        "--max-download-rate 8M did not hold: {rate} B/s\n{}",
        first.output()
    );
    first.kill();
    assert!(out.join("image.bin").exists());

    let second = Proc::spawn(
        "fetch (second run)",
        &mut sw.fetch(&out, &state, &[]),
        &root.join("fetch2.log"),
    );
    let restarted = Instant::now();
    let (n, total) = resumed(&second);
    // The seed still holds the killed run's connection (same node id)
    // until QUIC's idle timeout (120 s). The restarted node's dial must
    // replace it at once rather than be refused as a duplicate, so the
    // deadline is well under that timeout.
    let status = second.wait_exit(Duration::from_secs(60));
    let all = || {
        format!(
            "{}\n{}",
            outputs(&[&first, &second, &seed]),
            sw.tracker_log()
        )
    };
    assert!(
        status.success(),
        "second run exited with {status}\n{}",
        all()
    );
    assert_eq!(total, m);
    assert!(
        n >= have && n < m,
        "resumed from {n} verified pieces; {have} were reported before the kill\n{}",
        all()
    );
    let summary = finished(&second);
    let downloaded = field(&summary, "downloaded").expect("downloaded=");
    assert!(
        downloaded <= m - n,
        "the second run fetched {downloaded} pieces, but only {} were missing\n{}",
        m - n,
        all()
    );
    assert_eq!(field(&summary, "resumed"), Some(n));
    assert!(same_file(&sw.data, &out.join("image.bin")), "file differs");
    eprintln!(
        "killed at {have}/{m} pieces; resumed with {n}; fetched {downloaded} more in {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
}

/// A peer built from the library that serves wrong bytes: a seed that
/// imported good data, whose file is then altered under its storage
/// (storage serves what is on disk; the import already vouched for it).
struct CorruptPeer {
    rt: tokio::runtime::Runtime,
    node: Option<MeshNode>,
    torrent: Option<shoal::swarm::TorrentHandle>,
}

impl CorruptPeer {
    fn start(root: &Path, sw: &Swarm) -> CorruptPeer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let content = root.join("corrupt");
        std::fs::create_dir_all(&content).unwrap();
        let file = content.join("image.bin");
        std::fs::copy(&sw.data, &file).unwrap();
        let (node, torrent) = rt.block_on(async {
            let node = MeshNode::new(&root.join("corrupt-db")).await;
            let t = node
                .mesh
                .start(start(&sw.meta, &content, Role::Seed, vec![]))
                .await
                .unwrap();
            assert!(t.is_complete(), "the harness imported every piece");
            (node, t)
        });
        // One flipped byte in every piece.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(&file)
            .unwrap();
        let piece = sw.meta.info.piece_length;
        for p in 0..sw.pieces() {
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, p * piece).unwrap();
            b[0] ^= 0xff;
            f.write_all_at(&b, p * piece).unwrap();
        }
        f.sync_all().unwrap();
        CorruptPeer {
            rt,
            node: Some(node),
            torrent: Some(torrent),
        }
    }

    fn node_id_hex(&self) -> String {
        let id = self.node.as_ref().unwrap().mesh.endpoint().node_id();
        id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Tells the tracker it seeds, as `shoal seed` would.
    fn announce(&self, sw: &Swarm) {
        let ep = self.node.as_ref().unwrap().mesh.endpoint();
        let peer_id = shoal::announce::peer_id(&ep.node_id());
        let query = announce_query(
            &sw.meta.info_hash.0,
            &peer_id,
            ep.local_addr().unwrap().port(),
            0,
            "started",
            0,
        );
        let (code, body) = http_get(sw.tracker.http, &format!("/announce?{query}"));
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Dials the fetch at `addr` whenever the harness has no connection,
    /// so a dropped corrupt peer comes back until it is banned.
    fn keep_dialing(&self, addr: std::net::SocketAddr) {
        let t = self.torrent.clone().unwrap();
        self.rt.spawn(async move {
            loop {
                match t.status().await {
                    Ok(s) if s.peers.is_empty() => {
                        let _ = t.add_peer(PeerDial::addr(addr)).await;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
    }

    fn status(&self) -> shoal::swarm::TorrentStatus {
        let t = self.torrent.as_ref().unwrap();
        self.rt.block_on(t.status()).unwrap()
    }
}

impl Drop for CorruptPeer {
    fn drop(&mut self) {
        if let (Some(node), Some(t)) = (self.node.take(), self.torrent.take()) {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(10), node.stop(t)).await;
            });
        }
    }
}

#[test]
fn fetch_bans_a_corrupt_peer_and_completes_from_an_honest_seed() {
    let dir = tempdir();
    let root = dir.path();
    let sw = Swarm::new(root, 8 * MIB + 999);
    let bad = CorruptPeer::start(root, &sw);
    bad.announce(&sw);
    // The honest seed is slow, so the fast corrupt peer serves plenty.
    let seed = sw.seed(root, &["--max-upload-rate", "2M"]);
    let out = root.join("out");
    let fetch = Proc::spawn(
        "fetch",
        &mut sw.fetch(&out, &root.join("fetch-data"), &[]),
        &root.join("fetch.log"),
    );
    let addr: std::net::SocketAddr = fetch
        .line("listening on ", Duration::from_secs(30))
        .parse()
        .unwrap();
    bad.keep_dialing(addr);
    let status = fetch.wait_exit(Duration::from_secs(120));
    let all = || {
        format!(
            "{}\n{}\nharness status: {:?}",
            outputs(&[&fetch, &seed]),
            sw.tracker_log(),
            bad.status().stats
        )
    };
    assert!(status.success(), "fetch exited with {status}\n{}", all());
    assert!(same_file(&sw.data, &out.join("image.bin")), "file differs");
    let summary = finished(&fetch);
    assert!(
        field(&summary, "failed").is_some_and(|f| f >= 1),
        "no bad piece caught: {summary}\n{}",
        all()
    );
    let banned = format!("banned peer {}", bad.node_id_hex());
    assert!(
        fetch.log_text().contains(&banned),
        "the corrupt peer was not reported banned ({banned})\n{}",
        all()
    );
    eprintln!("fetch: {summary}");
}

#[test]
fn fetch_onto_a_full_disk_fails_clearly_and_completes_once_there_is_space() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    let mnt = root.join("mnt");
    let sw = Swarm::new(root, 64 * MIB + 77);
    let seed = sw.seed(root, &[]);
    let out = mnt.join("out");
    let state = root.join("fetch-data");

    let small = match Tmpfs::mount(&mnt, 24) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let began = Instant::now();
    let full = Proc::spawn(
        "fetch (24 MiB disk)",
        &mut sw.fetch(&out, &state, &[]),
        &root.join("fetch1.log"),
    );
    let status = full.wait_exit(Duration::from_secs(60));
    let took = began.elapsed();
    assert!(
        matches!(status.code(), Some(1) | Some(2)),
        "exit status {status}\n{}",
        full.output()
    );
    // The last word, for the operator: the cause and the file.
    let err = full.log_text();
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("no space") && line.contains(&s(&out)),
        "the error names neither the cause nor the path\n{}",
        full.output()
    );
    drop(full);
    drop(small);

    let _big = Tmpfs::mount(&mnt, 128).expect("remount with space");
    let second = Proc::spawn(
        "fetch (128 MiB disk)",
        &mut sw.fetch(&out, &state, &[]),
        &root.join("fetch2.log"),
    );
    let (n, m) = resumed(&second);
    let status = second.wait_exit(Duration::from_secs(180));
    let all = || format!("{}\n{}", outputs(&[&second, &seed]), sw.tracker_log());
    assert!(status.success(), "exit status {status}\n{}", all());
    assert_eq!(
        (n, m),
        (0, sw.pieces()),
        "no piece may count as stored from the full disk\n{}",
        all()
    );
    assert!(same_file(&sw.data, &out.join("image.bin")), "file differs");
    eprintln!("disk full reported after {took:?}: {line}");
}
