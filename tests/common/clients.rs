//! Real BitTorrent clients (aria2c, transmission-daemon) as test processes.
//!
//! Every client is confined to loopback: it listens on 127.0.0.1 only and
//! has DHT, local peer discovery, peer exchange, UPnP/NAT-PMP and uTP
//! turned off, so the only way it can find a peer is the tracker named in
//! the torrent. Dropping a wrapper kills the process (SIGKILL), so a test
//! that fails half-way leaves nothing running; aria2c is also told to exit
//! when the test process does (`--stop-with-process`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0,
/// then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Bytes of `path` actually written to disk (allocated blocks), 0 when it
/// does not exist. Clients run without preallocation, so this grows with
/// the download.
pub fn bytes_on_disk(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// Panics unless `got` holds exactly the bytes of `want`, naming the first
/// difference (not the whole contents).
pub fn assert_same_bytes(want: &Path, got: &Path) {
    let a = std::fs::read(want).unwrap_or_else(|e| panic!("read {}: {e}", want.display()));
    let b = std::fs::read(got).unwrap_or_else(|e| panic!("read {}: {e}", got.display()));
    if a != b {
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        panic!(
            "{} differs from {}: lengths {} and {}, first differing byte at {first:?}",
            got.display(),
            want.display(),
            b.len(),
            a.len()
        );
    }
}

/// Polls `f` every 200 ms until it returns `Some`; after `timeout`, panics
/// with `what` and whatever `dump` reports (client state, tracker stats).
pub fn poll_until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    dump: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", dump());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last `n` lines of a file, for failure reports.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running aria2c.
#[derive(Debug)]
pub struct Aria2 {
    /// The child process.
    pub child: Child,
    /// Name used in reports.
    pub name: String,
    /// TCP port it listens on for peers.
    pub port: u16,
    /// Where it reads or writes the torrent's files.
    pub dir: PathBuf,
    /// Its console output.
    pub out: PathBuf,
    /// Its log (info level: tracker requests, peers).
    pub log: PathBuf,
}

impl Aria2 {
    /// Starts aria2c on `torrent` with its files in `dir`; `work` holds
    /// its output and log; `extra` are more flags.
    pub fn start(name: &str, work: &Path, torrent: &Path, dir: &Path, extra: &[&str]) -> Aria2 {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let out = work.join(format!("{name}.out"));
        let log = work.join(format!("{name}.log"));
        let mut cmd = Command::new("aria2c");
        cmd.args([
            "--no-conf=true",
            // Loopback only, and the tracker is the only way to find peers.
            "--interface=127.0.0.1",
            "--disable-ipv6=true",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--async-dns=false",
            // Files are written where pieces land, so bytes on disk show
            // progress.
            "--file-allocation=none",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--bt-save-metadata=false",
            "--summary-interval=1",
            "--console-log-level=notice",
            "--log-level=info",
        ])
        .arg(format!("--log={}", log.display()))
        .arg(format!("--listen-port={port}"))
        .arg(format!("--dir={}", dir.display()))
        .arg(format!("--stop-with-process={}", std::process::id()))
        .args(extra)
        .arg(torrent)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(work.join(format!("{name}.err"))).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run aria2c: {e} (tests/run installs it)"));
        Aria2 {
            child,
            name: name.to_owned(),
            port,
            dir: dir.to_path_buf(),
            out,
            log,
        }
    }

    /// Seeds the data already in `dir`: checks it first (`-V`), then
    /// seeds until killed.
    pub fn seed(name: &str, work: &Path, torrent: &Path, dir: &Path, extra: &[&str]) -> Aria2 {
        let mut flags = vec!["--check-integrity=true", "--seed-ratio=0.0"];
        flags.extend_from_slice(extra);
        Aria2::start(name, work, torrent, dir, &flags)
    }

    /// Downloads into `dir` and exits (status 0) once complete.
    pub fn download(name: &str, work: &Path, torrent: &Path, dir: &Path, extra: &[&str]) -> Aria2 {
        let mut flags = vec!["--seed-time=0"];
        flags.extend_from_slice(extra);
        Aria2::start(name, work, torrent, dir, &flags)
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits at most `within` for it to exit; its status, or `None` if it
    /// is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of its console output and log.
    pub fn report(&self) -> String {
        format!(
            "--- aria2c {} (port {}) console:\n{}\n--- log:\n{}\n",
            self.name,
            self.port,
            tail(&self.out, 25),
            tail(&self.log, 40)
        )
    }
}

impl Drop for Aria2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running transmission-daemon with its own config directory, RPC on a
/// loopback port, driven by transmission-remote.
#[derive(Debug)]
pub struct Transmission {
    /// The daemon process.
    pub child: Child,
    /// Its RPC port on 127.0.0.1.
    pub rpc_port: u16,
    /// Its peer port on 127.0.0.1.
    pub peer_port: u16,
    /// Where it writes downloads.
    pub download_dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

impl Transmission {
    /// Starts a daemon under `work` (config, downloads, log) and waits, at
    /// most 30 s, for its RPC to answer.
    pub fn start(work: &Path) -> Transmission {
        let config = work.join("transmission");
        let download_dir = work.join("transmission-downloads");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&download_dir).unwrap();
        let rpc_port = free_port();
        let peer_port = free_port();
        let settings = serde_json::json!({
            "bind-address-ipv4": "127.0.0.1",
            "bind-address-ipv6": "::1",
            "rpc-enabled": true,
            "rpc-bind-address": "127.0.0.1",
            "rpc-port": rpc_port,
            "rpc-authentication-required": false,
            "rpc-whitelist-enabled": true,
            "rpc-whitelist": "127.0.0.1",
            "rpc-host-whitelist-enabled": false,
            "peer-port": peer_port,
            "peer-port-random-on-start": false,
            "dht-enabled": false,
            "lpd-enabled": false,
            "pex-enabled": false,
            "utp-enabled": false,
            "port-forwarding-enabled": false,
            "blocklist-enabled": false,
            // Tolerate plaintext peers (aria2 offers both).
            "encryption": 0,
            "download-dir": download_dir,
            "incomplete-dir-enabled": false,
            "rename-partial-files": false,
            "watch-dir-enabled": false,
            "start-added-torrents": true,
            "ratio-limit-enabled": false,
            "idle-seeding-limit-enabled": false,
            "download-queue-enabled": false,
            "seed-queue-enabled": false,
            "speed-limit-down-enabled": false,
            "speed-limit-up-enabled": false,
            "alt-speed-enabled": false,
            "message-level": 2,
        });
        std::fs::write(
            config.join("settings.json"),
            serde_json::to_vec_pretty(&settings).unwrap(),
        )
        .unwrap();
        let log = work.join("transmission.log");
        let child = Command::new("transmission-daemon")
            .arg("--foreground")
            .arg("--config-dir")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(work.join("transmission.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run transmission-daemon: {e} (tests/run installs it)")
            });
        let mut t = Transmission {
            child,
            rpc_port,
            peer_port,
            download_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if t.remote(&["-l"]).status.success() {
                break;
            }
            if let Ok(Some(status)) = t.child.try_wait() {
                panic!(
                    "transmission-daemon exited with {status}:\n{}",
                    tail(&t.log, 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "transmission-daemon RPC did not answer within 30 s:\n{}",
                tail(&t.log, 40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        t
    }

    /// Runs transmission-remote against this daemon.
    pub fn remote(&self, args: &[&str]) -> Output {
        Command::new("transmission-remote")
            .arg(format!("127.0.0.1:{}", self.rpc_port))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run transmission-remote: {e}"))
    }

    /// Runs transmission-remote; panics unless it succeeds. Returns stdout.
    pub fn remote_ok(&self, args: &[&str]) -> String {
        let out = self.remote(args);
        assert!(
            out.status.success(),
            "transmission-remote {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds `torrent`, its data in (or to be downloaded to) `dir`.
    pub fn add(&self, torrent: &Path, dir: &Path) {
        let out = self.remote_ok(&[
            "--add",
            &torrent.to_string_lossy(),
            "--download-dir",
            &dir.to_string_lossy(),
        ]);
        assert!(out.contains("success"), "adding the torrent: {out}");
    }

    /// `transmission-remote -t HASH -i`: state, progress, peers connected.
    pub fn info(&self, info_hash: &str) -> String {
        String::from_utf8_lossy(&self.remote(&["-t", info_hash, "-i"]).stdout).into_owned()
    }

    /// Percent done as Transmission reports it, if it can be read.
    pub fn percent_done(&self, info_hash: &str) -> Option<f64> {
        let info = self.info(info_hash);
        let line = info
            .lines()
            .find_map(|l| l.trim().strip_prefix("Percent Done:"))?;
        line.trim().trim_end_matches('%').parse().ok()
    }

    /// What Transmission saw: torrent info, its peers and trackers, and
    /// the end of its log.
    pub fn report(&self, info_hash: &str) -> String {
        let s = |args: &[&str]| {
            let o = self.remote(args);
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        format!(
            "--- transmission (peer port {}) info:\n{}\n--- peers:\n{}\n--- trackers:\n{}\n--- log:\n{}\n",
            self.peer_port,
            s(&["-t", info_hash, "-i"]),
            s(&["-t", info_hash, "-pi"]),
            s(&["-t", info_hash, "-it"]),
            tail(&self.log, 40)
        )
    }
}

impl Drop for Transmission {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
