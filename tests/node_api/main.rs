//! `shoal node` as the full daemon, through its REST API, `/metrics` and
//! the client commands: real processes on 127.0.0.1, a node with the
//! tracker role seeding, another downloading. `api.rs`: adding, pausing,
//! removing, errors, metrics, the client commands and magnets;
//! `resume.rs`: what survives a SIGKILL or a restart, and the completion
//! re-check.
//!
//! Every wait polls the API with a deadline; a failing test prints the
//! nodes' logs.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod resume;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::node::{api, start_mesh_node, NodeProc};
use common::{run_ok, shoal, write_data};
use serde_json::Value;

/// Longest a download in these tests may take.
pub(crate) const LIMIT: Duration = Duration::from_secs(90);

/// A seeding node with the tracker role, and a torrent of generated data.
pub(crate) struct Seeded {
    pub(crate) seed: NodeProc,
    pub(crate) torrent: PathBuf,
    pub(crate) data: Vec<u8>,
    pub(crate) ih: String,
    pub(crate) pieces: u64,
}

/// Starts a `shoal node --tracker`, makes `len` bytes of data in its
/// download directory, creates the torrent announcing to it, and adds it
/// to the node, which finds the data there and seeds it.
pub(crate) fn seeded(root: &Path, len: usize) -> Seeded {
    let seed = start_mesh_node(&root.join("seed"), true, "");
    let content = root.join("seed").join("downloads").join("image.bin");
    let torrent = root.join("image.torrent");
    data_and_torrent(&content, len, 7, Some(&seed.announce_url()), &torrent);
    let v = add_torrent(&seed, &std::fs::read(&torrent).unwrap(), "");
    let ih = v["infohash"].as_str().unwrap().to_owned();
    let pieces = v["pieces"].as_u64().unwrap();
    wait_state(&seed, &ih, "seeding", LIMIT);
    Seeded {
        seed,
        torrent,
        data: std::fs::read(&content).unwrap(),
        ih,
        pieces,
    }
}

/// Writes `len` bytes of generated data (`seed`) to `content` and makes
/// `torrent` of it in 256 KiB pieces, announcing to `announce` if given.
pub(crate) fn data_and_torrent(
    content: &Path,
    len: usize,
    seed: u64,
    announce: Option<&str>,
    torrent: &Path,
) {
    write_data(content, len, seed);
    let mut cmd = shoal();
    cmd.arg("create")
        .arg(content)
        .args(["--piece-size", "256K", "-o"])
        .arg(torrent);
    if let Some(url) = announce {
        cmd.args(["-t", url]);
    }
    run_ok(&mut cmd);
}

/// One API request that must be answered `want`; returns the JSON body.
pub(crate) fn call(
    node: &NodeProc,
    method: &str,
    path: &str,
    json: Option<&Value>,
    want: u16,
) -> Value {
    let body = json.map(Value::to_string).unwrap_or_default();
    let ct = json.map(|_| "application/json");
    let (code, v) = api(node.http, method, path, ct, body.as_bytes());
    assert_eq!(code, want, "{method} {path}: {v}\n{}", node.log_text());
    v
}

/// Adds a `.torrent` file's bytes (`query` such as `?paused=true`); the
/// node must answer 201 Created. Returns the torrent's view.
pub(crate) fn add_torrent(node: &NodeProc, bytes: &[u8], query: &str) -> Value {
    let path = format!("/api/v1/torrents{query}");
    let (code, v) = api(
        node.http,
        "POST",
        &path,
        Some("application/x-bittorrent"),
        bytes,
    );
    assert_eq!(code, 201, "POST {path}: {v}\n{}", node.log_text());
    v
}

/// `POST /api/v1/torrents/{ih}/{op}` (pause, resume), answered `want`.
pub(crate) fn torrent_op(node: &NodeProc, ih: &str, op: &str, want: u16) -> Value {
    call(
        node,
        "POST",
        &format!("/api/v1/torrents/{ih}/{op}"),
        None,
        want,
    )
}

pub(crate) fn get(node: &NodeProc, ih: &str) -> Value {
    call(node, "GET", &format!("/api/v1/torrents/{ih}"), None, 200)
}

/// Polls until the torrent is in `state`; returns its detail.
pub(crate) fn wait_state(node: &NodeProc, ih: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = get(node, ih);
        if v["state"] == state {
            return v;
        }
        assert_ne!(v["state"], "failed", "{v}\n{}", node.log_text());
        assert!(
            Instant::now() < deadline,
            "{ih} not {state} within {within:?}: {v}\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls until `f` holds for the torrent's detail; returns it.
pub(crate) fn wait_until(
    node: &NodeProc,
    ih: &str,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let v = get(node, ih);
        if f(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {LIMIT:?}: {v}\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
