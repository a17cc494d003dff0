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

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::node::{parse_scrape, scrape_query, NodeOpts, NodeProc};
use common::{s, shoal, tempdir, write_data};

/// A child process killed on drop, with its stdout lines on a channel.
struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    log: std::path::PathBuf,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        cmd.env("RUST_LOG", "warn,shoal=info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.into(),
            child,
            lines,
            log: log.to_path_buf(),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `within`) for a stdout line starting with `prefix`
    /// and returns the rest of it.
    fn line(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(_) => panic!(
                    "{} did not print {prefix:?} within {within:?}; log:\n{}",
                    self.name,
                    self.log_text()
                ),
            }
        }
    }

    /// Waits (at most `within`) for the process to exit.
    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}; log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most `within`) for the process to exit with success.
    fn wait_ok(&mut self, within: Duration) {
        let status = self.wait(within);
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{}",
            self.name,
            self.log_text()
        );
    }

    /// Sends SIGTERM and waits (at most `within`) for a clean exit.
    fn terminate_ok(&mut self, within: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait_ok(within);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut seed = seed;

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
    for (i, p) in fetches.iter_mut().enumerate() {
        p.wait_ok(Duration::from_secs(120));
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
    seed.terminate_ok(Duration::from_secs(20));
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
    let mut seed = Proc::spawn(
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
    let mut fetch = Proc::spawn(
        "fetch",
        one_shot("fetch", &root.join("fetch-data"))
            .arg(&magnet)
            .arg("-o")
            .arg(root.join("out"))
            .args(["--magnet-timeout", "60s"]),
        &root.join("fetch.log"),
    );
    assert_eq!(fetch.line("infohash ", Duration::from_secs(90)), infohash);
    fetch.wait_ok(Duration::from_secs(120));
    let got = std::fs::read(root.join("out").join("image.bin")).unwrap();
    assert!(got == std::fs::read(&data).unwrap(), "output differs");
    seed.terminate_ok(Duration::from_secs(20));
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
