//! The allow-list, /stats, and the daemon skeleton (config, signals, identity).

use super::*;

// 5. Allow-list
// ---------------------------------------------------------------------------

#[test]
fn allow_list_refuses_others_and_reloads_live() {
    let dir = tempdir();
    let list = dir.path().join("allowed.txt");
    let (a, b, c) = (hash("allowed-a"), hash("allowed-b"), hash("never-allowed"));
    std::fs::write(&list, format!("# the images we ship\n\n{}  # a\n", hex(&a))).unwrap();
    let mut n = NodeProc::start(
        dir.path(),
        &NodeOpts {
            tracker: true,
            extra_config: format!(
                "[tracker]\nallow_list = {:?}\nallow_list_reload_secs = 1\n",
                list.to_str().unwrap()
            ),
            ..NodeOpts::default()
        },
    );
    let ann = |h: &[u8; 20]| announce_path(h, &peer_id(1), 6001, 10, "");

    announce_ok(n.http, &ann(&a));
    let reason = must_fail(n.http, &ann(&b));
    assert!(reason.contains("not allowed"), "{reason}");
    assert_eq!(n.stats()["tracker"]["allow_list"], 1);
    // Scrape leaves refused torrents out.
    let files = scrape(n.http, &[a, b]);
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), vec![a.to_vec()]);

    // Add b: accepted without a restart.
    std::fs::write(&list, format!("{}\n{}\n", hex(&a), hex(&b).to_uppercase())).unwrap();
    wait_for(
        Duration::from_secs(10),
        "the allow-list reload to admit b",
        || failure(&bget(n.http, &ann(&b))).is_none().then_some(()),
    );
    assert_eq!(n.stats()["tracker"]["allow_list"], 2);
    assert!(must_fail(n.http, &ann(&c)).contains("not allowed"));

    // A malformed rewrite (which would drop b) is refused whole: the old
    // list stays in force.
    std::fs::write(&list, format!("{}\nnot-a-hash\n", hex(&a))).unwrap();
    wait_for(
        Duration::from_secs(10),
        "the node to refuse the malformed list",
        || {
            n.log_text()
                .contains("allow-list not reloaded")
                .then_some(())
        },
    );
    announce_ok(n.http, &announce_path(&b, &peer_id(2), 6002, 10, ""));
    announce_ok(n.http, &announce_path(&a, &peer_id(2), 6002, 10, ""));
    assert!(must_fail(n.http, &ann(&c)).contains("not allowed"));
    assert_eq!(n.stats()["tracker"]["allow_list"], 2);

    // A later good rewrite takes effect again (the watcher is still alive):
    // removing a refuses it.
    std::fs::write(&list, format!("{}\n", hex(&b))).unwrap();
    wait_for(
        Duration::from_secs(10),
        "the allow-list reload to drop a",
        || failure(&bget(n.http, &ann(&a))).map(|r| assert!(r.contains("not allowed"), "{r}")),
    );
    announce_ok(n.http, &ann(&b));
    assert_alive(&mut n);
}

// ---------------------------------------------------------------------------
// 6. /stats
// ---------------------------------------------------------------------------

#[test]
fn stats_html_and_json() {
    let dir = tempdir();
    let mut n = basic_node(dir.path());
    let (t1, t2) = (hash("stats-one"), hash("stats-two"));
    announce_ok(n.http, &announce_path(&t1, &peer_id(1), 6001, 0, ""));
    announce_ok(n.http, &announce_path(&t1, &peer_id(2), 6002, 10, ""));
    announce_ok(n.http, &announce_path(&t1, &peer_id(3), 6003, 10, ""));
    announce_ok(n.http, &announce_path(&t2, &peer_id(1), 6001, 10, ""));
    must_fail(n.http, "/announce?info_hash=short");

    let (status, html) = n.get("/stats");
    assert_eq!(status, 200);
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains(&hex(&t1)), "{html}");
    assert!(html.contains(&hex(&t2)), "{html}");
    assert!(
        html.to_ascii_lowercase().starts_with("<!doctype html>"),
        "{html}"
    );

    let st = n.stats();
    let t = &st["tracker"];
    assert_eq!(t["torrents"], 2, "{st}");
    assert_eq!(t["peers"], 4, "{st}");
    assert_eq!(t["seeders"], 1, "{st}");
    assert_eq!(t["leechers"], 3, "{st}");
    assert_eq!(t["announces"], 4, "{st}");
    assert_eq!(t["failures"], 1, "{st}");
    let swarms = t["swarms"].as_array().expect("swarms");
    assert_eq!(swarms.len(), 2);
    // Largest swarm first.
    assert_eq!(swarms[0]["info_hash"], hex(&t1));
    assert_eq!(
        (
            swarms[0]["seeders"].as_u64(),
            swarms[0]["leechers"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(swarms[1]["info_hash"], hex(&t2));
    assert_eq!(
        (
            swarms[1]["seeders"].as_u64(),
            swarms[1]["leechers"].as_u64()
        ),
        (Some(0), Some(1))
    );

    let repl = &st["replication"];
    assert!(repl["peers"].is_array(), "{st}");
    assert!(
        repl["deltas_sent"].is_u64() && repl["deltas_received"].is_u64(),
        "{st}"
    );
    // The node's id is the one in its gossip address.
    let id = st["node"]["peer_id"].as_str().expect("node.peer_id");
    assert!(
        n.gossip.ends_with(&format!("/p2p/{id}")),
        "{} vs {id}",
        n.gossip
    );
    assert_alive(&mut n);
}

// ---------------------------------------------------------------------------
// 7. Daemon skeleton
// ---------------------------------------------------------------------------

#[test]
fn config_example_is_a_working_config() {
    let dir = tempdir();
    let example = common::run_ok(shoal().args(["config", "example"]));
    let path = dir.path().join("example.toml");
    std::fs::write(&path, &example).unwrap();
    let mut cmd = shoal();
    cmd.current_dir(dir.path())
        .args(["tracker", "--config"])
        .arg(&path)
        .args(["--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0"]);
    let mut n = spawn_node(cmd, dir.path(), &dir.path().join("shoal-data"));
    // The example's data_dir is relative to where the node runs.
    assert!(
        n.data_dir.join("node.key").is_file(),
        "no key in {}",
        n.data_dir.display()
    );
    let ih = hash("example");
    let v = announce_ok(n.http, &announce_path(&ih, &peer_id(1), 6001, 10, ""));
    assert_eq!(int(&v, "interval"), 300, "the example's interval_secs");
    assert_eq!(
        int(&v, "min interval"),
        60,
        "the example's min_interval_secs"
    );
    // default_numwant = 50 from the example.
    for i in 2..60 {
        announce_ok(
            n.http,
            &announce_path(&ih, &peer_id(i), 6000 + i as u16, 10, ""),
        );
    }
    let v = announce_ok(n.http, &announce_path(&ih, &peer_id(1), 6001, 10, ""));
    assert_eq!(compact4(&v).len(), 50);
    assert!(
        n.terminate(Duration::from_secs(10)),
        "log:\n{}",
        n.log_text()
    );
}

#[test]
fn bad_configs_are_refused_naming_the_file() {
    let dir = tempdir();
    let cases = [
        (
            "unknown.toml",
            "[tracker]\nintervall_secs = 5\n",
            "intervall_secs",
        ),
        ("toplevel.toml", "data_dri = \"x\"\n", "data_dri"),
        ("syntax.toml", "[tracker\n", ""),
    ];
    for (name, text, mention) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = output_within(
            shoal()
                .current_dir(dir.path())
                .args(["tracker", "--config"])
                .arg(&path)
                .args(["--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0"]),
            Duration::from_secs(10),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "{name}: the file is not named: {err}"
        );
        assert!(
            err.contains(mention),
            "{name}: {mention:?} not mentioned: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.stdout.is_empty(), "{name}: started anyway");
    }
    // Values out of range, and a file that does not exist.
    let path = dir.path().join("zero.toml");
    std::fs::write(&path, "[tracker]\ninterval_secs = 0\n").unwrap();
    let out = output_within(
        shoal()
            .current_dir(dir.path())
            .args(["tracker", "--config"])
            .arg(&path),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interval_secs"));
    let missing = dir.path().join("missing.toml");
    let out = output_within(
        shoal()
            .current_dir(dir.path())
            .args(["node", "--config"])
            .arg(&missing),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing.to_str().unwrap()));

    // An allow-list that cannot be read, or holds a bad line, stops the
    // start-up rather than running with no list (every torrent allowed).
    let list = dir.path().join("allow.txt");
    std::fs::write(&list, "0123456789abcdef0123456789abcdef01234567\nnope\n").unwrap();
    for (file, mention) in [(&list, "nope"), (&dir.path().join("absent.txt"), "")] {
        let path = dir.path().join("allow.toml");
        std::fs::write(
            &path,
            format!(
                "data_dir = {:?}\n[tracker]\nallow_list = {:?}\n",
                dir.path().join("data"),
                file
            ),
        )
        .unwrap();
        let out = output_within(
            shoal().args(["tracker", "--config"]).arg(&path).args([
                "--http",
                "127.0.0.1:0",
                "--gossip",
                "127.0.0.1:0",
            ]),
            Duration::from_secs(10),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains(mention),
            "{err}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("http listening"));
    }
}

#[test]
fn sigterm_exits_cleanly_and_identity_persists() {
    let dir = tempdir();
    let opts = NodeOpts {
        tracker: true,
        ..NodeOpts::default()
    };
    let mut n = NodeProc::start(dir.path(), &opts);
    let id1 = n.stats()["node"]["peer_id"].as_str().unwrap().to_owned();
    assert!(id1.starts_with("12D3KooW"), "{id1}");
    assert!(n.data_dir.join("node.key").is_file());
    let t = Instant::now();
    assert!(
        n.terminate(Duration::from_secs(10)),
        "no clean exit on SIGTERM; log:\n{}",
        n.log_text()
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    drop(n);

    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("data").join("node.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "node.key mode {mode:o}");
    let key_bytes = std::fs::read(&key).unwrap();

    let mut n = NodeProc::start(dir.path(), &opts);
    let id2 = n.stats()["node"]["peer_id"].as_str().unwrap().to_owned();
    assert_eq!(id1, id2, "the identity changed across a restart");
    assert!(n.gossip.ends_with(&format!("/p2p/{id1}")));
    assert_eq!(std::fs::read(&key).unwrap(), key_bytes);

    // A second node cannot take the same HTTP port: a clear error, exit 2.
    let out = output_within(
        shoal()
            .args(["tracker", "--data-dir"])
            .arg(dir.path().join("second"))
            .args(["--http", &n.http.to_string(), "--gossip", "127.0.0.1:0"]),
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot listen for HTTP") && err.contains(&n.http.to_string()),
        "{err}"
    );

    // SIGTERM while clients hold idle connections (one silent, one idle
    // after a keep-alive response): they are closed at once.
    let mut held = Vec::new();
    for req in [&b""[..], b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"] {
        let mut s = TcpStream::connect(n.http).unwrap();
        s.write_all(req).unwrap();
        held.push(s);
    }
    assert_eq!(n.stats()["node"]["peer_id"], id1.as_str());
    let t = Instant::now();
    assert!(
        n.terminate(Duration::from_secs(10)),
        "no clean exit on SIGTERM with idle connections; log:\n{}",
        n.log_text()
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "idle connections held the shutdown for {:?}",
        t.elapsed()
    );
    drop(held);
    drop(n);

    // A client stalled mid-request (request_timeout_secs is 10 s here) gets
    // the bounded drain window, and the node still exits 0 within 10 s.
    let mut n = NodeProc::start(dir.path(), &opts);
    let mut stalled = TcpStream::connect(n.http).unwrap();
    stalled.write_all(b"GET /announce?info_hash=").unwrap();
    assert_eq!(n.stats()["node"]["peer_id"], id1.as_str());
    assert!(
        n.terminate(Duration::from_secs(10)),
        "no clean exit on SIGTERM with a stalled client; log:\n{}",
        n.log_text()
    );
    drop(stalled);
    drop(n);

    // A signal sent the moment the node says it is ready stops it cleanly
    // (the handlers are in place before the addresses are printed).
    for sig in ["-INT", "-TERM", "-INT", "-TERM"] {
        let mut n = NodeProc::start(dir.path(), &opts);
        let _ = Command::new("kill")
            .arg(sig)
            .arg(n.child.id().to_string())
            .status();
        let status = wait_for(Duration::from_secs(10), "exit after a signal", || {
            n.child.try_wait().unwrap()
        });
        assert!(
            status.success(),
            "kill {sig}: {status}; log:\n{}",
            n.log_text()
        );
    }

    // A corrupt key is an error naming the file, never silently replaced.
    let bad = tempdir();
    std::fs::create_dir_all(bad.path().join("data")).unwrap();
    let bad_key = bad.path().join("data").join("node.key");
    std::fs::write(&bad_key, b"not a key").unwrap();
    let out = output_within(
        shoal()
            .args(["tracker", "--data-dir"])
            .arg(bad.path().join("data"))
            .args(["--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0"]),
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(bad_key.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read(&bad_key).unwrap(), b"not a key");

    // A fresh data directory is a fresh identity.
    let other = tempdir();
    let n = NodeProc::start(other.path(), &opts);
    assert_ne!(n.stats()["node"]["peer_id"].as_str().unwrap(), id1);
}

#[test]
fn help_works() {
    for sub in ["tracker", "node"] {
        let out = output_within(shoal().args([sub, "--help"]), Duration::from_secs(10));
        assert!(out.status.success(), "shoal {sub} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in [
            "--config",
            "--data-dir",
            "--http",
            "--gossip",
            "--join",
            "--log-format",
        ] {
            assert!(
                text.contains(flag),
                "shoal {sub} --help lacks {flag}:\n{text}"
            );
        }
        if sub == "node" {
            assert!(text.contains("--tracker"), "{text}");
        }
    }
    let out = output_within(shoal().arg("--help"), Duration::from_secs(10));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("tracker") && text.contains("node"),
        "{text}"
    );
}
