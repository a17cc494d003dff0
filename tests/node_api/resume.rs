//! What survives: a SIGKILLed node resumes from its durable bitfield, a
//! restarted one keeps its paused flag, limits and intent to import data
//! already on disk, and a download whose content fails the completion
//! re-check is failed, never complete.

use std::time::{Duration, Instant};

use super::common::node::start_mesh_node;
use super::common::{tempdir, write_data};
use super::{
    add_torrent, call, data_and_torrent, get, seeded, torrent_op, wait_state, wait_until, LIMIT,
};

#[test]
fn sigkill_mid_download_resumes_from_sled() {
    let dir = tempdir();
    let root = dir.path();
    let sd = seeded(root, 16 << 20);
    // 16 MiB at 2 MB/s: about 8 s, time to kill it in the middle.
    let cfg = "[mesh]\ndownload_limit = 2000000\n";
    let leech_dir = root.join("leech");
    let mut node = start_mesh_node(&leech_dir, false, cfg);
    let bytes = std::fs::read(&sd.torrent).unwrap();
    add_torrent(&node, &bytes, "");
    let quarter = sd.pieces / 4;
    let before = wait_until(&node, &sd.ih, "a quarter of the pieces", |v| {
        v["have"].as_u64().unwrap() >= quarter
    });
    let had = before["have"].as_u64().unwrap();
    assert!(had < sd.pieces, "finished before the kill");
    node.kill();

    // The first seed still holds the dead process's connection until QUIC's
    // idle timeout (two minutes) and refuses the restarted node as a
    // duplicate meanwhile; a second seed that never met it serves the rest
    // at once. What is under test is the resume, not the reconnect.
    let seed2_dir = root.join("seed2");
    let seed2 = start_mesh_node(&seed2_dir, false, "");
    write_data(
        &seed2_dir.join("downloads").join("image.bin"),
        sd.data.len(),
        7,
    );
    add_torrent(&seed2, &bytes, "");
    wait_state(&seed2, &sd.ih, "seeding", LIMIT);

    // Restarted on the same data directory, it finds the torrent in sled
    // and carries on by itself; nobody adds it again.
    let node = start_mesh_node(&leech_dir, false, cfg);
    let done = wait_state(&node, &sd.ih, "seeding", LIMIT);
    let at_start = done["have_at_start"].as_u64().unwrap();
    let fetched = done["pieces_downloaded"].as_u64().unwrap();
    assert!(at_start >= had, "lost verified pieces: {at_start} < {had}");
    assert!(
        fetched <= sd.pieces - at_start,
        "re-fetched pieces it had: {fetched} downloaded, {} were missing",
        sd.pieces - at_start
    );
    let file = leech_dir.join("downloads").join("image.bin");
    assert!(std::fs::read(file).unwrap() == sd.data, "copy differs");
}

#[test]
fn a_download_that_fails_its_recheck_is_failed_not_complete() {
    use std::os::unix::fs::FileExt;
    let dir = tempdir();
    let root = dir.path();
    let sd = seeded(root, 8 << 20);
    let hook = root.join("hook.txt");
    let node = start_mesh_node(
        &root.join("leech"),
        false,
        &format!(
            "[mesh]\ndownload_limit = 2000000\non_complete = 'touch {}'\n",
            hook.display()
        ),
    );
    add_torrent(&node, &std::fs::read(&sd.torrent).unwrap(), "");
    let half = wait_until(&node, &sd.ih, "half the pieces", |v| {
        v["have"].as_u64().unwrap() >= sd.pieces / 2
    });
    assert!(
        half["have"].as_u64().unwrap() < sd.pieces,
        "finished too soon"
    );
    // Spoil the first byte of every piece on disk behind the node's back:
    // the pieces it already stored stay spoiled (the ones still to come
    // overwrite theirs), so the content as a whole no longer matches.
    let file = root.join("leech").join("downloads").join("image.bin");
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    for p in 0..sd.pieces {
        let at = p * 256 * 1024;
        f.write_at(&[sd.data[at as usize] ^ 0xff], at).unwrap();
    }
    let deadline = Instant::now() + LIMIT;
    let failed = loop {
        let v = get(&node, &sd.ih);
        assert_ne!(v["state"], "seeding", "reported complete: {v}");
        if v["state"] == "failed" {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "never failed: {v}\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let bad = failed["bad_pieces"].as_array().unwrap();
    assert!(bad.len() as u64 >= sd.pieces / 2 - 1, "{failed}");
    assert!(!failed["complete"].as_bool().unwrap());
    assert!(
        failed["error"].as_str().unwrap().contains("re-check"),
        "{failed}"
    );
    assert!(!hook.exists(), "the hook ran for corrupt data");
    // It cannot be resumed into looking complete.
    torrent_op(&node, &sd.ih, "resume", 409);
}

#[test]
fn paused_flag_and_limits_survive_a_restart() {
    let dir = tempdir();
    let root = dir.path();
    let sd = seeded(root, 2 << 20);
    let leech_dir = root.join("leech");
    let mut node = start_mesh_node(&leech_dir, false, "");
    let v = add_torrent(&node, &std::fs::read(&sd.torrent).unwrap(), "?paused=true");
    assert_eq!(v["state"], "paused");
    let limits = serde_json::json!({"upload": 123456, "download": 654321});
    let path = format!("/api/v1/torrents/{}/limits", sd.ih);
    call(&node, "POST", &path, Some(&limits), 200);
    assert!(
        node.terminate(Duration::from_secs(15)),
        "{}",
        node.log_text()
    );

    let node = start_mesh_node(&leech_dir, false, "");
    let v = get(&node, &sd.ih);
    assert_eq!(v["state"], "paused", "{v}");
    assert_eq!(v["have"], 0);
    assert_eq!(v["upload_limit"], 123_456);
    assert_eq!(v["download_limit"], 654_321);
    torrent_op(&node, &sd.ih, "resume", 200);
    wait_state(&node, &sd.ih, "seeding", LIMIT);
    let copy = std::fs::read(leech_dir.join("downloads").join("image.bin")).unwrap();
    assert!(copy == sd.data, "copy differs");
}

/// A torrent added paused over data already in its place keeps the intent
/// to import that data across a restart: resumed afterwards, it seeds what
/// is on disk. Nobody else has the torrent, so importing is the only way
/// it can get there.
#[test]
fn import_intent_of_a_paused_add_survives_a_restart() {
    let dir = tempdir();
    let root = dir.path();
    let node_dir = root.join("node");
    let content = node_dir.join("downloads").join("image.bin");
    let torrent = root.join("image.torrent");
    data_and_torrent(&content, (3 << 20) + 11, 5, None, &torrent);
    let mut node = start_mesh_node(&node_dir, false, "");
    let v = add_torrent(&node, &std::fs::read(&torrent).unwrap(), "?paused=true");
    assert_eq!(
        (v["state"].as_str(), v["have"].as_u64()),
        (Some("paused"), Some(0))
    );
    let ih = v["infohash"].as_str().unwrap().to_owned();
    let pieces = v["pieces"].as_u64().unwrap();
    assert!(
        node.terminate(Duration::from_secs(15)),
        "{}",
        node.log_text()
    );

    let node = start_mesh_node(&node_dir, false, "");
    assert_eq!(get(&node, &ih)["state"], "paused");
    torrent_op(&node, &ih, "resume", 200);
    // Within a short limit: a leecher with no peers would wait forever.
    let done = wait_state(&node, &ih, "seeding", Duration::from_secs(30));
    assert_eq!(done["have"].as_u64(), Some(pieces), "{done}");
    assert_eq!(done["pieces_downloaded"].as_u64(), Some(0), "{done}");
    let want = super::common::data((3 << 20) + 11, 5);
    assert!(std::fs::read(&content).unwrap() == want, "the data changed");
}
