//! The API's operations, its refusals, `/metrics`, the client commands,
//! and magnet links found through gossip-learned trackers and on their
//! way to a torrent.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::common;
use super::common::node::{api, start_mesh_node};
use super::common::{run, run_ok, shoal, tempdir};
use super::{
    add_torrent, call, data_and_torrent, get, seeded, torrent_op, wait_state, wait_until, Seeded,
    LIMIT,
};

/// The collection of torrents.
const TORRENTS: &str = "/api/v1/torrents";

/// The value of a sample `name` (no labels) in a Prometheus exposition,
/// after checking every sample line is `name[{labels}] number` and
/// announced by a `# TYPE` line.
fn metric(text: &str, name: &str) -> f64 {
    let mut typed = std::collections::HashSet::new();
    let mut found = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            typed.insert(it.next().unwrap().to_owned());
            assert!(
                matches!(it.next(), Some("counter" | "gauge")),
                "bad TYPE line {line:?}"
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let family = series.split('{').next().unwrap();
        assert!(typed.contains(family), "{family} has no TYPE line");
        if series.contains('{') {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
        }
        if series == name {
            found = Some(v);
        }
    }
    found.unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn download_pause_resume_metrics_and_remove() {
    let dir = tempdir();
    let root = dir.path();
    let sd = seeded(root, 8 << 20);
    // Slow enough (about 4 s) that pausing lands mid-download. The hook
    // records what it was told.
    let hook = root.join("hook.txt");
    let node = start_mesh_node(
        &root.join("leech"),
        false,
        &format!(
            "[mesh]\ndownload_limit = 2000000\non_complete = 'echo \"$SHOAL_INFOHASH $SHOAL_PATH\" > {}'\n",
            hook.display()
        ),
    );
    let body = serde_json::json!({ "path": sd.torrent });
    let v = call(&node, "POST", TORRENTS, Some(&body), 201);
    assert_eq!(v["infohash"], sd.ih.as_str());
    // The same torrent twice is a conflict.
    let v = call(&node, "POST", TORRENTS, Some(&body), 409);
    assert!(v["error"].as_str().unwrap().contains("already"), "{v}");

    let part = wait_until(&node, &sd.ih, "some pieces", |v| {
        v["have"].as_u64().unwrap() > 0
    });
    assert!(
        part["peer_list"].as_array().unwrap().len() == 1,
        "the seed is the one peer: {part}"
    );
    // Its address is the seed's, on loopback.
    let addr = part["peer_list"][0]["addr"].as_str().unwrap_or("");
    assert!(
        addr.parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback()),
        "the seed's address: {part}"
    );
    let v = torrent_op(&node, &sd.ih, "pause", 200);
    assert_eq!(v["state"], "paused");
    let paused = get(&node, &sd.ih)["have"].as_u64().unwrap();
    assert!(paused < sd.pieces, "finished before the pause: {paused}");
    // Paused means nothing moves: the count holds while we look again.
    std::thread::sleep(Duration::from_millis(1500));
    let still = get(&node, &sd.ih);
    assert_eq!(still["have"].as_u64().unwrap(), paused, "{still}");
    assert_eq!(still["state"], "paused");

    torrent_op(&node, &sd.ih, "resume", 200);
    let done = wait_state(&node, &sd.ih, "seeding", LIMIT);
    assert_eq!(done["have"].as_u64().unwrap(), sd.pieces);
    assert_eq!(done["have_at_start"].as_u64().unwrap(), paused);
    assert!(done["complete"].as_bool().unwrap());
    let file = root.join("leech").join("downloads").join("image.bin");
    assert!(std::fs::read(&file).unwrap() == sd.data, "copy differs");
    let said = common::node::wait_for(LIMIT, "the on_complete hook", || {
        std::fs::read_to_string(&hook)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert_eq!(said.trim(), format!("{} {}", sd.ih, file.display()));

    // Metrics: the pieces verified over both runs. A piece that lands
    // while the first run is being paused may miss that run's count, so
    // the floor is what the second run fetched.
    let (code, body) = node.get("/metrics");
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    let verified = metric(&text, "shoal_pieces_verified_total");
    assert!(
        verified >= (sd.pieces - paused) as f64 && verified <= sd.pieces as f64,
        "{verified} of {} pieces verified\n{text}",
        sd.pieces
    );
    assert_eq!(metric(&text, "shoal_pieces_failed_total"), 0.0);
    assert!(metric(&text, "shoal_downloaded_bytes_total") >= sd.data.len() as f64);
    assert_eq!(metric(&text, "shoal_torrents"), 1.0);
    assert!(
        text.contains(&format!(
            "shoal_torrent_progress_ratio{{infohash=\"{}\",name=\"image.bin\"}} 1",
            sd.ih
        )),
        "{text}"
    );
    // On loopback every peer is near (a round trip far under 10 ms).
    assert!(
        text.contains(&format!(
            "shoal_torrent_far_peers{{infohash=\"{}\",name=\"image.bin\"}} 0",
            sd.ih
        )),
        "{text}"
    );
    assert_eq!(done["far_peers"].as_u64(), Some(0), "{done}");
    // The seed carries the tracker role and says so.
    let (_, body) = sd.seed.get("/metrics");
    let seed_text = String::from_utf8(body).unwrap();
    assert!(
        metric(&seed_text, "shoal_tracker_torrents") >= 1.0,
        "{seed_text}"
    );
    // Uploads count once the receiver has acknowledged every byte, a
    // moment after it has the data: read until they cover one copy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, body) = sd.seed.get("/metrics");
        let up = metric(
            &String::from_utf8(body).unwrap(),
            "shoal_uploaded_bytes_total",
        );
        if up >= sd.data.len() as f64 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "seed uploaded {up}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Per-torrent limits stick; node-wide ones read back.
    let path = format!("{TORRENTS}/{}", sd.ih);
    let limits = serde_json::json!({"upload": 1000000, "download": 0});
    let v = call(&node, "PUT", &format!("{path}/limits"), Some(&limits), 200);
    assert_eq!(v["upload_limit"], 1_000_000);
    assert!(v["download_limit"].is_null());
    let v = call(&node, "GET", "/api/v1/limits", None, 200);
    assert_eq!(v["download"].as_u64(), Some(2_000_000));

    call(
        &node,
        "DELETE",
        &format!("{path}?delete_data=true"),
        None,
        200,
    );
    assert!(!file.exists(), "the data was not deleted");
    call(&node, "GET", &path, None, 404);
    let v = call(&node, "GET", TORRENTS, None, 200);
    assert_eq!(v, serde_json::json!([]));
}

/// Sends `body` after the headers, ignoring a reset once the server has
/// answered early; returns the status.
fn post_big(addr: SocketAddr, body_len: usize) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /api/v1/torrents HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/x-bittorrent\r\nContent-Length: {body_len}\r\n\r\n"
    );
    let _ = s.write_all(head.as_bytes());
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    while sent < body_len {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A request and the status it must get: method, path, content type,
/// body, status.
type Case = (&'static str, String, Option<&'static str>, Vec<u8>, u16);

#[test]
fn bad_requests_get_json_errors() {
    let dir = tempdir();
    let node = start_mesh_node(&dir.path().join("n"), false, "");
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let cases: Vec<Case> = vec![
        ("GET", "/api/v1/torrents/xyz".into(), None, vec![], 400),
        ("DELETE", "/api/v1/torrents/12345".into(), None, vec![], 400),
        (
            "GET",
            format!("/api/v1/torrents/{unknown}"),
            None,
            vec![],
            404,
        ),
        (
            "POST",
            format!("/api/v1/torrents/{unknown}/pause"),
            None,
            vec![],
            404,
        ),
        (
            "POST",
            format!("/api/v1/torrents/{unknown}/resume"),
            None,
            vec![],
            404,
        ),
        (
            "DELETE",
            format!("/api/v1/torrents/{unknown}"),
            None,
            vec![],
            404,
        ),
        (
            "DELETE",
            format!("/api/v1/torrents/{unknown}?delete_data=maybe"),
            None,
            vec![],
            400,
        ),
        (
            "PUT",
            format!("/api/v1/torrents/{unknown}/limits"),
            Some("application/json"),
            br#"{"upload": 5}"#.to_vec(),
            404,
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            Some("application/x-bittorrent"),
            b"d4:infod6:lengthi-1eee".to_vec(),
            400,
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            Some("application/x-bittorrent"),
            b"\xff\x00garbage".to_vec(),
            400,
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            Some("application/json"),
            b"{not json".to_vec(),
            400,
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            Some("application/json"),
            br#"{"path": "/nonexistent/x.torrent"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            Some("application/json"),
            br#"{"magnet": "magnet:?dn=no-hash"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            Some("application/json"),
            br#"{"path": "a", "magnet": "b"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            Some("text/plain"),
            b"hello".to_vec(),
            415,
        ),
        (
            "PUT",
            "/api/v1/limits".into(),
            Some("application/json"),
            br#"{"upload": "fast"}"#.to_vec(),
            400,
        ),
        ("GET", "/api/v1/nope".into(), None, vec![], 404),
    ];
    for (method, path, ct, body, want) in cases {
        let (code, v) = api(node.http, method, &path, ct, &body);
        assert_eq!(code, want, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: no JSON error: {v}"
        );
    }
    assert_eq!(post_big(node.http, 17 << 20), 413);
    // Nothing above hurt the node.
    let v = call(&node, "GET", "/api/v1/node", None, 200);
    assert!(v["mesh"]["quic"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(!node.log_text().contains("panicked"), "{}", node.log_text());

    // A tracker-only node has no torrents to serve, and says so.
    let tracker = common::node::NodeProc::start(
        &dir.path().join("t"),
        &common::node::NodeOpts {
            tracker: true,
            ..Default::default()
        },
    );
    let v = call(&tracker, "GET", TORRENTS, None, 503);
    assert!(v["error"].as_str().unwrap().contains("tracker only"));
}

#[test]
fn client_commands_add_ls_status_rm() {
    let dir = tempdir();
    let root = dir.path();
    let sd = seeded(root, 3 << 20);
    let node = start_mesh_node(&root.join("leech"), false, "");
    let url = format!("http://{}", node.http);
    let out_dir = root.join("elsewhere");
    let out = run_ok(
        shoal()
            .arg("add")
            .arg(&sd.torrent)
            .arg("-o")
            .arg(&out_dir)
            .args(["--api", &url]),
    );
    assert!(out.contains(&sd.ih), "{out}");
    wait_state(&node, &sd.ih, "seeding", LIMIT);
    assert!(std::fs::read(out_dir.join("image.bin")).unwrap() == sd.data);

    let ls = run_ok(shoal().args(["ls", "--api", &url]));
    assert!(
        ls.contains(&sd.ih) && ls.contains("seeding") && ls.contains("100.0%"),
        "{ls}"
    );
    let json: Value =
        serde_json::from_str(&run_ok(shoal().args(["ls", "--json", "--api", &url]))).unwrap();
    assert_eq!(json[0]["infohash"], sd.ih.as_str());
    let st = run_ok(shoal().args(["status", &sd.ih, "--api", &url]));
    assert!(
        st.contains("seeding") && st.contains(&format!("{0}/{0} pieces", sd.pieces)),
        "{st}"
    );
    let st = run_ok(shoal().args(["status", "--api", &url]));
    assert!(st.contains("quic") && st.contains(&sd.ih), "{st}");

    // Adding it again is refused with the node's reason.
    let again = run(shoal().arg("add").arg(&sd.torrent).args(["--api", &url]));
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));

    let rm = run_ok(shoal().args(["rm", &sd.ih, "--delete-data", "--api", &url]));
    assert!(rm.contains("removed"), "{rm}");
    assert!(!out_dir.join("image.bin").exists());
    let ls = run_ok(shoal().args(["ls", "--api", &url]));
    assert!(ls.contains("no torrents"), "{ls}");
    // SIGTERM stops the whole daemon cleanly and promptly.
    let mut node = node;
    assert!(
        node.terminate(Duration::from_secs(15)),
        "no clean exit on SIGTERM:\n{}",
        node.log_text()
    );

    // No node there: a clear error, exit 2.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = run(shoal().args(["ls", "--api", &format!("http://{dead}")]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shoal node") && err.contains("running"),
        "{err}"
    );
}

#[test]
fn magnet_links_and_gossip_learned_trackers() {
    let dir = tempdir();
    let root = dir.path();
    // The tracker node seeds a torrent that names no tracker at all.
    let seed = start_mesh_node(&root.join("seed"), true, "");
    let content = root.join("seed").join("downloads").join("image.bin");
    let torrent = root.join("bare.torrent");
    data_and_torrent(&content, 2 << 20, 9, None, &torrent);
    let v = add_torrent(&seed, &std::fs::read(&torrent).unwrap(), "");
    let ih = v["infohash"].as_str().unwrap().to_owned();
    wait_state(&seed, &ih, "seeding", LIMIT);

    // A node that joined the seed's gossip learns its tracker URL and
    // finds the seed through it, by magnet link alone.
    let node = start_mesh_node(
        &root.join("leech"),
        false,
        &format!("[gossip]\njoin = [\"{}\"]\n", seed.gossip_addr),
    );
    // Until gossip has named the tracker, the magnet has nowhere to look.
    let want = seed.announce_url();
    common::node::wait_for(LIMIT, "the tracker URL by gossip", || {
        let (_, v) = api(node.http, "GET", "/api/v1/node", None, b"");
        let urls = v["mesh"]["gossip_trackers"].as_array()?.clone();
        urls.iter().any(|u| u == want.as_str()).then_some(())
    });
    let magnet = format!("magnet:?xt=urn:btih:{ih}&dn=image.bin");
    let body = serde_json::json!({ "magnet": magnet });
    let v = call(&node, "POST", TORRENTS, Some(&body), 202);
    assert_eq!(v["state"], "resolving");
    assert_eq!(v["name"], "image.bin");
    let done = wait_state(&node, &ih, "seeding", LIMIT);
    assert_eq!(done["pieces"], 8);

    // A magnet nobody serves waits as `resolving`; it cannot be paused,
    // and removing it ends the search.
    let nobody = "fedcba9876543210fedcba9876543210fedcba98";
    let body = serde_json::json!({ "magnet": format!("magnet:?xt=urn:btih:{nobody}") });
    let v = call(&node, "POST", TORRENTS, Some(&body), 202);
    assert_eq!(v["state"], "resolving", "{v}");
    let v = call(&node, "GET", TORRENTS, None, 200);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    torrent_op(&node, nobody, "pause", 409);
    let path = format!("{TORRENTS}/{nobody}");
    call(&node, "DELETE", &path, None, 200);
    call(&node, "GET", &path, None, 404);
    let copy = std::fs::read(root.join("leech").join("downloads").join("image.bin")).unwrap();
    assert!(copy == std::fs::read(&content).unwrap(), "copy differs");
}

/// A magnet's infohash answers at every moment from the add to the
/// download's end: `resolving` until the torrent takes its place, then the
/// torrent. The placeholder used to leave before the torrent arrived, and
/// for the length of the add's storage write the API said "no torrent"
/// (404), which `magnet_links_and_gossip_learned_trackers` hit once. This
/// polls without pause to land in such a window if there is one.
#[test]
fn a_magnet_is_never_missing_on_its_way_to_a_torrent() {
    let dir = tempdir();
    let root = dir.path();
    let Seeded { seed, ih, .. } = seeded(root, 1 << 20);

    let node = start_mesh_node(&root.join("leech"), false, "");
    let magnet = format!(
        "magnet:?xt=urn:btih:{ih}&dn=image.bin&tr={}",
        seed.announce_url()
    );
    let body = serde_json::json!({ "magnet": magnet });
    call(&node, "POST", TORRENTS, Some(&body), 202);
    let path = format!("{TORRENTS}/{ih}");
    let start = std::time::Instant::now();
    let mut states = Vec::new();
    loop {
        let (code, v) = api(node.http, "GET", &path, None, b"");
        assert_eq!(
            code,
            200,
            "after {:?}, states {states:?}: {v}",
            start.elapsed()
        );
        let state = v["state"].as_str().unwrap_or("?").to_owned();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state == "seeding" {
            break;
        }
        assert!(start.elapsed() < LIMIT, "states {states:?}");
    }
    assert_eq!(
        states.first().map(String::as_str),
        Some("resolving"),
        "{states:?}"
    );
}

/// With `http.api_token_file` set, the API answers only requests carrying
/// `Authorization: Bearer TOKEN`, while the tracker facade, `/stats` and
/// `/metrics` (which BitTorrent clients and Prometheus call without
/// credentials) stay open; the client commands send the token from
/// `SHOAL_API_TOKEN` or `--api-token-file`. A token file without a usable
/// token stops the node at start, with the reason.
#[test]
fn the_api_token_guards_the_api_and_nothing_else() {
    let dir = tempdir();
    let root = dir.path();
    let token = "t0ken-for-the-api-test";
    let file = root.join("api-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let node = start_mesh_node(
        &root.join("node"),
        true,
        &format!("[http]\napi_token_file = {file:?}\n"),
    );
    let node_info = |auth: Option<&str>| {
        let mut req = "GET /api/v1/node HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".to_owned();
        if let Some(a) = auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        common::node::http_raw(node.http, req.as_bytes())
    };
    let (status, body) = node_info(None);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    // The API's own error shape, like every other refusal.
    let v: Value = serde_json::from_str(&body).expect("a JSON error");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("Bearer")),
        "{v}"
    );
    for wrong in [
        "Bearer t0ken-for-the-api-tes",
        "Bearer t0ken-for-the-api-test2",
        &format!("Basic {token}"),
    ] {
        assert_eq!(node_info(Some(wrong)).0, 401, "{wrong}");
    }
    let (status, body) = node_info(Some(&format!("Bearer {token}")));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // An unknown API path is refused before it is looked up.
    assert_eq!(api(node.http, "GET", "/api/v2/nothing", None, b"").0, 401);

    for open in ["/metrics", "/stats", "/"] {
        assert_eq!(node.get(open).0, 200, "{open}");
    }
    // A bencoded tracker answer (a failure for this empty query), not 401.
    let (status, body) = node.get("/announce");
    assert_eq!(status, 200);
    assert!(body.starts_with(b"d"), "{}", String::from_utf8_lossy(&body));

    let url = format!("http://{}", node.http);
    let refused = run(shoal()
        .args(["ls", "--api", &url])
        .env_remove("SHOAL_API_TOKEN"));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("401") && err.contains("SHOAL_API_TOKEN"),
        "{err}"
    );
    let ls = run_ok(
        shoal()
            .args(["ls", "--json", "--api", &url])
            .env("SHOAL_API_TOKEN", token),
    );
    assert_eq!(
        serde_json::from_str::<Value>(&ls).unwrap(),
        Value::Array(vec![])
    );
    let st = run_ok(
        shoal()
            .args(["status", "--api", &url, "--api-token-file"])
            .arg(&file),
    );
    assert!(st.contains("quic"), "{st}");

    // A blank token file (given by the flag's variable this time) is
    // refused at start, before anything listens.
    let blank = root.join("blank-token");
    std::fs::write(&blank, "\n").unwrap();
    let out = run(shoal()
        .args(["node", "--data-dir"])
        .arg(root.join("blank-data"))
        .args(["--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0"])
        .args(["--listen", "127.0.0.1:0"])
        .env("SHOAL_API_TOKEN_FILE", &blank));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no usable token"), "{err}");
}
