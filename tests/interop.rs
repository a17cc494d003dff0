//! Interoperability with the tools people use today, run for real:
//! transmission-show reads shoal's torrents, and shoal reads and verifies
//! torrents made by transmission-create and mktorrent. transmission-show
//! is the independent reference for infohashes.

mod common;
use std::path::Path;

use common::*;

/// What transmission-show reports: (hash, piece count, files).
fn transmission_show(torrent: &Path) -> (String, u64, Vec<String>) {
    let out = run_ok(std::process::Command::new("transmission-show").arg(torrent));
    let hash = field(&out, "Hash:");
    let pieces = field(&out, "Piece Count:").parse().unwrap();
    let files_at = out.find("FILES").expect("FILES section");
    let mut files: Vec<String> = out[files_at + 5..]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.rsplit_once(" (").map_or(l, |(name, _)| name).to_owned())
        .collect();
    files.sort();
    (hash, pieces, files)
}

fn field(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {out}"))
        .trim()
        .to_owned()
}

fn shoal_paths(v: &serde_json::Value) -> Vec<String> {
    let mut files: Vec<String> = listed_files(v).into_iter().map(|(p, _)| p).collect();
    files.sort();
    files
}

#[test]
fn transmission_show_reads_shoal_torrents() {
    let dir = tempdir();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    let single = dir.path().join("single.img");
    write_data(&single, 2_000_000, 5);
    for (src, blake3) in [(&tree, true), (&single, true), (&tree, false)] {
        let torrent = dir.path().join(format!("out-{blake3}.torrent"));
        let _ = std::fs::remove_file(&torrent);
        let mut cmd = shoal();
        cmd.args([
            "create",
            &s(src),
            "-o",
            &s(&torrent),
            "-t",
            "http://127.0.0.1:7880/announce",
        ]);
        if !blake3 {
            cmd.arg("--no-blake3");
        }
        run_ok(&mut cmd);
        let v = show_json(&s(&torrent));
        let (hash, pieces, files) = transmission_show(&torrent);
        assert_eq!(hash, v["info_hash"].as_str().unwrap());
        assert_eq!(pieces, v["piece_count"].as_u64().unwrap());
        if v["multi_file"] == true {
            assert_eq!(files, shoal_paths(&v));
        } else {
            assert_eq!(files, vec![v["name"].as_str().unwrap().to_owned()]);
        }
    }
}

/// Makes a torrent of `src` with `tool`, returning its path.
fn make_with(tool: &str, src: &Path, out: &Path) {
    let mut cmd = std::process::Command::new(tool);
    match tool {
        "mktorrent" => cmd
            .args(["-l", "16", "-a", "http://127.0.0.1:7880/announce", "-o"])
            .arg(out)
            .arg(src),
        "transmission-create" => cmd
            .args(["-s", "64", "-t", "http://127.0.0.1:7880/announce", "-o"])
            .arg(out)
            .arg(src),
        _ => unreachable!(),
    };
    run_ok(&mut cmd);
}

#[test]
fn shoal_reads_and_verifies_torrents_from_stock_tools() {
    for tool in ["mktorrent", "transmission-create"] {
        let dir = tempdir();
        let tree = dir.path().join("tree");
        make_tree(&tree);
        let single = dir.path().join("single.img");
        write_data(&single, 1_500_000, 7);
        for src in [&tree, &single] {
            let torrent = dir.path().join(format!(
                "{}.torrent",
                src.file_name().unwrap().to_string_lossy()
            ));
            make_with(tool, src, &torrent);
            let v = show_json(&s(&torrent));
            let (hash, pieces, files) = transmission_show(&torrent);
            assert_eq!(
                v["info_hash"].as_str().unwrap(),
                hash,
                "{tool} {}",
                src.display()
            );
            assert_eq!(v["piece_count"].as_u64().unwrap(), pieces);
            assert_eq!(v["blake3"], false);
            if src == &tree {
                assert_eq!(shoal_paths(&v), files);
            }
            let (code, report) = verify_json(&torrent, src);
            assert_eq!(code, 0, "{tool}: {report}");
            assert_eq!(report["checked_with"], "sha1");
        }

        // One flipped byte: exactly the right piece, through SHA-1 alone.
        let piece_len = show_json(&s(&dir.path().join("single.img.torrent")))["piece_length"]
            .as_u64()
            .unwrap();
        let offset = 1_234_567u64;
        flip_byte(&single, offset);
        let (code, report) = verify_json(&dir.path().join("single.img.torrent"), &single);
        assert_eq!(code, 1);
        assert_eq!(
            report["bad"],
            serde_json::json!([offset / piece_len]),
            "{tool}"
        );
    }
}
