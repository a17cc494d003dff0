//! Running real `shoal node` / `shoal tracker` processes in tests.
//!
//! A node is started with HTTP and gossip on port 0; the test reads the
//! addresses the node prints on stdout ("http listening on ...", "gossip
//! listening on ..."), with a deadline, instead of sleeping. Dropping a
//! [`NodeProc`] kills the process; its data directory lives as long as the
//! caller keeps it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running node process.
pub struct NodeProc {
    /// The child process.
    pub child: Child,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its gossip multiaddr, with `/p2p/<peer id>`.
    pub gossip: String,
    /// Its gossip `ip:port`, for `--join`.
    pub gossip_addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where its stderr (logs) goes.
    pub log: PathBuf,
}

/// Options for a node; `extra_config` is appended to the TOML config file.
#[derive(Default, Clone)]
pub struct NodeOpts {
    /// Carry the tracker role.
    pub tracker: bool,
    /// Gossip addresses (`ip:port`) to join.
    pub join: Vec<SocketAddr>,
    /// HTTP listen address; default 127.0.0.1:0.
    pub http: Option<SocketAddr>,
    /// Gossip listen address; default 127.0.0.1:0.
    pub gossip: Option<SocketAddr>,
    /// Extra TOML appended to the generated config.
    pub extra_config: String,
    /// Run the binary under this wrapper (e.g. `ip netns exec NAME`).
    pub wrapper: Vec<String>,
}

impl NodeProc {
    /// Starts a node with its data under `dir` and waits, at most 30 s, for
    /// it to print its addresses.
    pub fn start(dir: &Path, opts: &NodeOpts) -> NodeProc {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("shoal.toml");
        let mut toml = String::new();
        toml.push_str(&format!("data_dir = {:?}\n", dir.join("data")));
        toml.push_str(&opts.extra_config);
        std::fs::write(&config, toml).unwrap();
        let log = dir.join("node.log");
        let bin = env!("CARGO_BIN_EXE_shoal");
        let mut cmd = if opts.wrapper.is_empty() {
            Command::new(bin)
        } else {
            let mut c = Command::new(&opts.wrapper[0]);
            c.args(&opts.wrapper[1..]).arg(bin);
            c
        };
        cmd.arg(if opts.tracker { "tracker" } else { "node" })
            .arg("--config")
            .arg(&config)
            .arg("--http")
            .arg(
                opts.http
                    .map_or("127.0.0.1:0".to_string(), |a| a.to_string()),
            )
            .arg("--gossip")
            .arg(
                opts.gossip
                    .map_or("127.0.0.1:0".to_string(), |a| a.to_string()),
            );
        for j in &opts.join {
            cmd.arg("--join").arg(j.to_string());
        }
        NodeProc::spawn(cmd, &log, &dir.join("data"))
    }

    /// Runs `cmd` (a `shoal node`/`tracker` command line), logging its
    /// stderr to `log`, and waits at most 30 s for it to print its HTTP and
    /// gossip addresses.
    pub fn spawn(mut cmd: Command, log: &Path, data_dir: &Path) -> NodeProc {
        cmd.env("RUST_LOG", "info,libp2p=warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap());
        let mut child = cmd.spawn().expect("start shoal node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut http, mut gossip) = (None, None);
        while http.is_none() || gossip.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => panic!(
                    "node did not print its addresses within 30 s; log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ),
            };
            if let Some(a) = line.strip_prefix("http listening on ") {
                http = Some(a.trim().parse::<SocketAddr>().unwrap());
            }
            if let Some(a) = line.strip_prefix("gossip listening on ") {
                gossip = Some(a.trim().to_owned());
            }
        }
        let gossip = gossip.unwrap();
        NodeProc {
            child,
            http: http.unwrap(),
            gossip_addr: multiaddr_socket(&gossip),
            gossip,
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
        }
    }

    /// The announce URL of this node's tracker facade.
    pub fn announce_url(&self) -> String {
        format!("http://{}/announce", self.http)
    }

    /// `GET path` on this node; returns (status, body).
    pub fn get(&self, path_and_query: &str) -> (u16, Vec<u8>) {
        http_get(self.http, path_and_query)
    }

    /// `/stats?format=json`.
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = self.get("/stats?format=json");
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most `within`) for a clean exit; returns
    /// whether it exited in time with status 0.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/ip4/1.2.3.4/tcp/5/p2p/...` -> `1.2.3.4:5`.
pub fn multiaddr_socket(m: &str) -> SocketAddr {
    let parts: Vec<&str> = m.split('/').collect();
    let ip = parts[2];
    let port = parts[4];
    if parts[1] == "ip6" {
        format!("[{ip}]:{port}").parse().unwrap()
    } else {
        format!("{ip}:{port}").parse().unwrap()
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`; returns (status, body).
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> (u16, Vec<u8>) {
    http_raw(
        addr,
        format!("GET {path_and_query} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// Sends raw request bytes; returns (status, body). Status 0 means the
/// server closed the connection without a valid response.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, buf);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..p]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + size]);
        b = &b[p + 2 + size + 2..];
    }
    out
}

/// Percent-encodes every byte (what BitTorrent clients do for binary
/// fields).
pub fn pct(b: &[u8]) -> String {
    b.iter().map(|c| format!("%{c:02X}")).collect()
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------
// Tracker replication helpers (tests/tracker_replication.rs and
// tests/tracker_partition.rs): announce and scrape queries, their decoded
// answers, and a keep-alive HTTP connection for bulk announces.
// ---------------------------------------------------------------------

/// A 20-byte id (infohash or peer id) made from `label`, padded with `-`.
pub fn id20(label: &str) -> [u8; 20] {
    let mut id = [b'-'; 20];
    let b = label.as_bytes();
    assert!(b.len() <= 20, "id label {label:?} longer than 20 bytes");
    id[..b.len()].copy_from_slice(b);
    id
}

/// The query string (no `?`) of an announce with a non-compact answer, so
/// the answer carries peer ids. `event` may be empty.
pub fn announce_query(
    info_hash: &[u8; 20],
    peer_id: &[u8; 20],
    port: u16,
    left: u64,
    event: &str,
    numwant: u32,
) -> String {
    let mut q = format!(
        "info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}&compact=0&numwant={numwant}",
        pct(info_hash),
        pct(peer_id)
    );
    if !event.is_empty() {
        q.push_str("&event=");
        q.push_str(event);
    }
    q
}

/// The query string (no `?`) of a scrape for `hashes`.
pub fn scrape_query(hashes: &[[u8; 20]]) -> String {
    hashes
        .iter()
        .map(|h| format!("info_hash={}", pct(h)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A decoded (non-compact) announce answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceReply {
    /// Live seeders.
    pub complete: i64,
    /// Live leechers.
    pub incomplete: i64,
    /// The peers handed out, by peer id.
    pub peers: std::collections::BTreeMap<[u8; 20], SocketAddr>,
}

fn bencode_dict(
    body: &[u8],
) -> Result<std::collections::BTreeMap<Vec<u8>, shoal_proto::bencode::Value>, String> {
    let v = shoal_proto::bencode::decode(body)
        .map_err(|e| format!("not bencode ({e}): {:?}", String::from_utf8_lossy(body)))?;
    let d = v.as_dict().ok_or("answer is not a dictionary")?.clone();
    if let Some(r) = d.get(&b"failure reason"[..]) {
        return Err(format!("failure reason: {}", r.as_str().unwrap_or("?")));
    }
    Ok(d)
}

fn int_field(
    d: &std::collections::BTreeMap<Vec<u8>, shoal_proto::bencode::Value>,
    k: &str,
) -> Result<i64, String> {
    d.get(k.as_bytes())
        .and_then(|v| v.as_int())
        .ok_or_else(|| format!("no integer {k:?}"))
}

/// Decodes a non-compact announce answer; a `failure reason` is an `Err`.
pub fn parse_announce(body: &[u8]) -> Result<AnnounceReply, String> {
    let d = bencode_dict(body)?;
    let mut peers = std::collections::BTreeMap::new();
    let list = d
        .get(&b"peers"[..])
        .and_then(|v| v.as_list())
        .ok_or("no peer list (was compact=0 sent?)")?;
    for p in list {
        let p = p.as_dict().ok_or("peer is not a dictionary")?;
        let id: [u8; 20] = p
            .get(&b"peer id"[..])
            .and_then(|v| v.as_bytes())
            .and_then(|b| b.try_into().ok())
            .ok_or("peer without a 20-byte peer id")?;
        let ip: std::net::IpAddr = p
            .get(&b"ip"[..])
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
            .ok_or("peer without an ip")?;
        let port = int_field(p, "port")?;
        let port = u16::try_from(port).map_err(|_| format!("bad port {port}"))?;
        if peers.insert(id, SocketAddr::new(ip, port)).is_some() {
            return Err(format!(
                "peer {} listed twice",
                String::from_utf8_lossy(&id)
            ));
        }
    }
    Ok(AnnounceReply {
        complete: int_field(&d, "complete")?,
        incomplete: int_field(&d, "incomplete")?,
        peers,
    })
}

/// Scrape counts of one torrent: (complete, incomplete, downloaded).
pub type Counts = (i64, i64, i64);

/// Decodes a scrape answer into counts by infohash.
pub fn parse_scrape(body: &[u8]) -> Result<std::collections::BTreeMap<[u8; 20], Counts>, String> {
    let d = bencode_dict(body)?;
    let files = d
        .get(&b"files"[..])
        .and_then(|v| v.as_dict())
        .ok_or("no files dictionary")?;
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in files {
        let ih: [u8; 20] = k
            .as_slice()
            .try_into()
            .map_err(|_| "infohash key is not 20 bytes")?;
        let f = v.as_dict().ok_or("file entry is not a dictionary")?;
        out.insert(
            ih,
            (
                int_field(f, "complete")?,
                int_field(f, "incomplete")?,
                int_field(f, "downloaded")?,
            ),
        );
    }
    Ok(out)
}

/// The libp2p peer id at the end of a gossip multiaddr (`.../p2p/<id>`).
pub fn multiaddr_peer_id(m: &str) -> String {
    m.rsplit_once("/p2p/")
        .map(|(_, id)| id.to_owned())
        .unwrap_or_else(|| panic!("{m:?} has no /p2p/ part"))
}

/// Whether `/stats?format=json` output lists `peer_id` as a connected
/// replication peer.
pub fn stats_lists_connected(stats: &serde_json::Value, peer_id: &str) -> bool {
    stats["replication"]["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["peer_id"] == peer_id && p["connected"] == true)
}

/// One HTTP/1.1 keep-alive connection, for many requests in a row.
pub struct KeepAlive {
    stream: std::io::BufReader<TcpStream>,
}

impl KeepAlive {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> KeepAlive {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        KeepAlive {
            stream: BufReader::new(s),
        }
    }

    /// `GET path` on the open connection; returns (status, body). The
    /// server must answer with a `Content-Length` body (hyper does for
    /// full bodies).
    pub fn get(&mut self, path_and_query: &str) -> (u16, Vec<u8>) {
        let req = format!("GET {path_and_query} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.stream.get_mut().write_all(req.as_bytes()).unwrap();
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut len = None;
        loop {
            let mut h = String::new();
            self.stream.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
            }
        }
        let len = len.unwrap_or_else(|| panic!("answer to {path_and_query} has no Content-Length"));
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).unwrap();
        (status, body)
    }
}

/// Polls `f` every 20 ms until it returns `Ok`, or panics after `timeout`
/// naming `what` and the last `Err` (what was still wrong). Returns the
/// value and how long it took.
pub fn poll_until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        match f() {
            Ok(v) => return (v, start.elapsed()),
            Err(e) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; still: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Peer lists by peer id.
pub type PeerMap = std::collections::BTreeMap<[u8; 20], SocketAddr>;

/// What one tracker replica shows for some torrents: scrape counts, and
/// the peer list an announcing leecher gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    /// Scrape counts by infohash.
    pub counts: std::collections::BTreeMap<[u8; 20], Counts>,
    /// Peer lists by infohash.
    pub peers: std::collections::BTreeMap<[u8; 20], PeerMap>,
}

/// The peer id of node `label`'s witness: a leecher the tests announce to
/// that node alone, always from the same address, to read the peer lists
/// the node hands out. Re-announcing it changes only its entry's stamp,
/// never what any replica shows, so reading never disturbs a comparison.
pub fn witness_id(label: &str) -> [u8; 20] {
    id20(&format!("witness-{label}"))
}

impl View {
    /// The view as `pid` itself sees it: an announce never lists the
    /// announcing peer.
    pub fn seen_by(&self, pid: &[u8; 20]) -> View {
        let mut v = self.clone();
        for peers in v.peers.values_mut() {
            peers.remove(pid);
        }
        v
    }
}

fn id_name(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches('-').to_owned()
}

/// A readable difference between two views, for failure messages.
pub fn view_diff(what: &str, got: &View, want: &View) -> String {
    let mut out = Vec::new();
    let show = |m: &PeerMap| {
        m.iter()
            .map(|(p, a)| format!("{}@{a}", id_name(p)))
            .collect::<Vec<_>>()
            .join(",")
    };
    for (h, w) in &want.counts {
        let g = got.counts.get(h);
        if g != Some(w) {
            out.push(format!("{}: counts {g:?}, want {w:?}", id_name(h)));
        }
    }
    for (h, w) in &want.peers {
        let g = got.peers.get(h).cloned().unwrap_or_default();
        if &g != w {
            out.push(format!(
                "{}: peers [{}], want [{}]",
                id_name(h),
                show(&g),
                show(w)
            ));
        }
    }
    format!("{what}: {}", out.join("; "))
}

/// One swarm of a [`Model`]: live peers' addresses and whether each seeds.
pub type ModelSwarm = std::collections::BTreeMap<[u8; 20], (SocketAddr, bool)>;

/// What a cluster should hold after some announces: live peers (address,
/// seeder) and the `downloaded` total, per torrent.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Live peers by infohash and peer id.
    pub peers: std::collections::BTreeMap<[u8; 20], ModelSwarm>,
    /// `completed` events counted per infohash.
    pub downloaded: std::collections::BTreeMap<[u8; 20], i64>,
}

impl Model {
    /// Records the effect of an announce the tracker accepted.
    pub fn record(
        &mut self,
        ih: &[u8; 20],
        pid: &[u8; 20],
        addr: SocketAddr,
        seeder: bool,
        event: &str,
    ) {
        let swarm = self.peers.entry(*ih).or_default();
        let was_seeding = swarm.get(pid).is_some_and(|(_, s)| *s);
        if event == "stopped" {
            swarm.remove(pid);
        } else {
            swarm.insert(*pid, (addr, seeder));
        }
        if event == "completed" && !was_seeding {
            *self.downloaded.entry(*ih).or_default() += 1;
        }
    }

    /// The view every replica should show for `hashes`.
    pub fn expected(&self, hashes: &[[u8; 20]]) -> View {
        let mut v = View::default();
        for h in hashes {
            let swarm = self.peers.get(h).cloned().unwrap_or_default();
            let seeders = swarm.values().filter(|(_, s)| *s).count() as i64;
            let leechers = swarm.len() as i64 - seeders;
            let downloaded = self.downloaded.get(h).copied().unwrap_or(0);
            v.counts.insert(*h, (seeders, leechers, downloaded));
            v.peers
                .insert(*h, swarm.iter().map(|(p, (a, _))| (*p, *a)).collect());
        }
        v
    }

    /// Live peers over every torrent.
    pub fn live_peers(&self) -> usize {
        self.peers.values().map(|s| s.len()).sum()
    }
}

// ---------------------------------------------------------------------
// The full daemon (`shoal node` with the mesh) and its REST API.
// ---------------------------------------------------------------------

/// Starts `shoal node` (with `--tracker` when `tracker`) with HTTP, gossip
/// and QUIC on 127.0.0.1 port 0, data in `dir/data`, downloads in
/// `dir/downloads`, and `extra_config` appended to its config file. The
/// same `dir` restarts the same node.
pub fn start_mesh_node(dir: &Path, tracker: bool, extra_config: &str) -> NodeProc {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("shoal.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n{extra_config}", dir.join("data")),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.arg("node");
    if tracker {
        cmd.arg("--tracker");
    }
    cmd.arg("--config")
        .arg(&config)
        .args(["--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0"])
        .args(["--listen", "127.0.0.1:0"])
        .arg("--download-dir")
        .arg(dir.join("downloads"));
    // Each start appends to the log, so a restarted node's history stays.
    let log = dir.join(format!(
        "node-{}.log",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    NodeProc::spawn(cmd, &log, &dir.join("data"))
}

/// One API request; returns the status and the body as JSON (`Null` when
/// the body is not JSON).
pub fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if let Some(ct) = content_type {
        req.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    let (status, body) = http_raw(addr, &req);
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}
