//! `shoal create`, `show` and `verify` end to end on real files: round
//! trips, corruption, missing data, and bad input that must give a clear
//! error (exit 2, the file named) and never a panic.

mod common;
use common::*;

#[test]
fn nested_directory_round_trips() {
    let dir = tempdir();
    let data = dir.path().join("tree");
    let made = make_tree(&data);
    let torrent = dir.path().join("tree.torrent");
    let out = run_ok(shoal().args([
        "create",
        &s(&data),
        "-o",
        &s(&torrent),
        "-t",
        "http://127.0.0.1:7880/announce",
    ]));
    assert!(out.contains("infohash"), "{out}");

    let v = show_json(&s(&torrent));
    assert_eq!(v["name"], "tree");
    assert_eq!(v["blake3"], true);
    let mut expected: Vec<(String, u64)> = made
        .iter()
        .map(|(n, l)| (format!("tree/{n}"), *l as u64))
        .collect();
    expected.sort();
    assert_eq!(listed_files(&v), expected);
    let total: u64 = expected.iter().map(|(_, l)| l).sum();
    assert_eq!(v["total_length"], total);
    assert_eq!(v["trackers"][0][0], "http://127.0.0.1:7880/announce");

    // Both path conventions work: the content itself and its parent.
    for path in [&data, &dir.path().to_path_buf()] {
        let (code, report) = verify_json(&torrent, path);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["checked_with"], "blake3");
        assert_eq!(report["good"], v["piece_count"]);
    }
}

#[test]
fn flipped_byte_names_exactly_its_piece() {
    let dir = tempdir();
    let data = dir.path().join("tree");
    make_tree(&data);
    let torrent = dir.path().join("t.torrent");
    run_ok(shoal().args([
        "create",
        &s(&data),
        "-o",
        &s(&torrent),
        "--piece-size",
        "64K",
    ]));
    // Stream order: a.img (700000), empty, one (1), sub/b.bin, ...
    // Byte 150 of sub/b.bin is stream offset 700001 + 150 -> piece 10.
    flip_byte(&data.join("sub/b.bin"), 150);
    let (code, report) = verify_json(&torrent, &data);
    assert_eq!(code, 1);
    assert_eq!(report["bad"], serde_json::json!([(700_001 + 150) / 65_536]));
    assert_eq!(report["missing"], serde_json::json!([]));
    // The text report names the piece and the file.
    let out = run(shoal().arg("verify").arg(&torrent).arg(&data));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad piece 10: ") && text.contains("tree/sub/b.bin"),
        "{text}"
    );
}

#[test]
fn missing_and_short_files_are_reported_as_missing() {
    let dir = tempdir();
    let data = dir.path().join("tree");
    make_tree(&data);
    let torrent = dir.path().join("t.torrent");
    run_ok(shoal().args([
        "create",
        &s(&data),
        "-o",
        &s(&torrent),
        "--piece-size",
        "64K",
        "--no-blake3",
    ]));
    std::fs::remove_file(data.join("z/last")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(data.join("a.img"))
        .unwrap();
    f.set_len(100_000).unwrap();
    let (code, report) = verify_json(&torrent, &data);
    assert_eq!(code, 1);
    assert_eq!(report["checked_with"], "sha1");
    let missing: Vec<u64> = report["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // a.img keeps pieces 0 (bytes 0..65536); 100000 cuts piece 1.
    assert!(
        missing.contains(&1) && missing.contains(&10) && !missing.contains(&0),
        "{missing:?}"
    );
    let last_piece = report["pieces"].as_u64().unwrap() - 1;
    assert!(missing.contains(&last_piece));
}

#[test]
fn single_file_piece_size_and_no_blake3() {
    let dir = tempdir();
    let file = dir.path().join("disk.img");
    write_data(&file, 3 * 1024 * 1024 + 17, 9);
    let torrent = dir.path().join("disk.torrent");
    run_ok(shoal().args([
        "create",
        &s(&file),
        "-o",
        &s(&torrent),
        "--piece-size",
        "512K",
        "--no-blake3",
        "--private",
        "--comment",
        "nightly",
    ]));
    let v = show_json(&s(&torrent));
    assert_eq!(v["piece_length"], 512 * 1024);
    assert_eq!(v["piece_count"], 7);
    assert_eq!(v["blake3"], false);
    assert_eq!(v["private"], true);
    assert_eq!(v["comment"], "nightly");
    assert_eq!(v["multi_file"], false);
    assert_eq!(verify_json(&torrent, &file).0, 0);
    // Default piece size: 3 MiB is small, so the 256 KiB floor applies.
    let auto = dir.path().join("auto.torrent");
    run_ok(shoal().args(["create", &s(&file), "-o", &s(&auto)]));
    assert_eq!(show_json(&s(&auto))["piece_length"], 256 * 1024);
}

#[test]
fn magnet_links_show_and_round_trip() {
    let dir = tempdir();
    let file = dir.path().join("x.bin");
    write_data(&file, 1000, 3);
    let torrent = dir.path().join("x.torrent");
    run_ok(shoal().args([
        "create",
        &s(&file),
        "-o",
        &s(&torrent),
        "-t",
        "http://a/announce,http://b/announce",
        "-t",
        "http://c/announce",
    ]));
    let v = show_json(&s(&torrent));
    assert_eq!(
        v["trackers"],
        serde_json::json!([
            ["http://a/announce", "http://b/announce"],
            ["http://c/announce"]
        ])
    );
    let magnet = v["magnet"].as_str().unwrap();
    let m = show_json(magnet);
    assert_eq!(m["info_hash"], v["info_hash"]);
    assert_eq!(m["name"], "x.bin");
    assert_eq!(m["total_length"], 1000);
    assert_eq!(m["trackers"].as_array().unwrap().len(), 3);
}

#[test]
fn every_command_has_help() {
    for cmd in [
        &["--help"][..],
        &["create", "--help"],
        &["show", "--help"],
        &["verify", "--help"],
    ] {
        let out = run_ok(shoal().args(cmd));
        assert!(out.contains("Usage"), "{cmd:?}: {out}");
    }
}

#[test]
fn bad_input_gives_clear_errors_not_panics() {
    let dir = tempdir();
    let garbage = dir.path().join("garbage.torrent");
    std::fs::write(&garbage, b"this is not bencode").unwrap();
    let truncated = dir.path().join("truncated.torrent");
    let good = dir.path().join("good.torrent");
    let data = dir.path().join("d.bin");
    write_data(&data, 5000, 1);
    run_ok(shoal().args(["create", &s(&data), "-o", &s(&good)]));
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let escape = dir.path().join("escape.torrent");
    std::fs::write(
        &escape,
        b"d4:infod5:filesld6:lengthi1e4:pathl2:..6:passwdeee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
    )
    .unwrap();
    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let missing = dir.path().join("nope.torrent");

    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["show".into(), s(&garbage)], "garbage.torrent"),
        (vec!["show".into(), s(&truncated)], "truncated.torrent"),
        (vec!["show".into(), s(&escape)], "not allowed"),
        (vec!["show".into(), s(&missing)], "nope.torrent"),
        (vec!["show".into(), s(dir.path())], "cannot read"),
        (
            vec!["show".into(), "magnet:?xt=urn:btih:123".into()],
            "infohash",
        ),
        (
            vec!["verify".into(), s(&garbage), s(&data)],
            "garbage.torrent",
        ),
        (
            vec!["verify".into(), s(&good), s(&dir.path().join("absent"))],
            "absent",
        ),
        (
            vec![
                "create".into(),
                s(&empty_dir),
                "-o".into(),
                s(&dir.path().join("e.torrent")),
            ],
            "nothing to share",
        ),
        (
            vec!["create".into(), s(&dir.path().join("absent"))],
            "absent",
        ),
        (
            vec!["create".into(), s(&data), "-o".into(), s(&good)],
            "already exists",
        ),
        (
            vec![
                "create".into(),
                s(&data),
                "--piece-size".into(),
                "3000".into(),
            ],
            "power of two",
        ),
    ];
    for (args, needle) in cases {
        let out = run(shoal().args(&args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
    // A refused create leaves no torrent behind.
    assert!(!dir.path().join("e.torrent").exists());
}

/// Output that cannot be written is not a panic: a reader that went away
/// ends the command as SIGPIPE would (status 141, nothing on stderr), and
/// a full disk is an error that says so (status 2). `println!` panicked in
/// both cases (status 101).
#[test]
fn unwritable_output_is_not_a_panic() {
    let dir = tempdir();
    let data = dir.path().join("d.bin");
    write_data(&data, 5000, 1);
    let torrent = dir.path().join("d.torrent");
    run_ok(shoal().args(["create", &s(&data), "-o", &s(&torrent)]));
    let torrent = s(&torrent);
    for args in [vec!["show", torrent.as_str()], vec!["config", "example"]] {
        // The read end closed before the command starts, so its first
        // write fails whatever the timing.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = shoal().args(&args).stdout(writer).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = shoal().args(&args).stdout(full).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("cannot write the output"), "{args:?}: {err}");
    }
}
