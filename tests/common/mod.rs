//! Helpers shared by the integration tests: running the `shoal` binary and
//! the real BitTorrent tools, and making test data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `shoal` binary cargo built for this test run.
pub fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

/// Runs a command and returns its output, failing the test if it could
/// not start (for example, a tool that is not installed).
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (scripts/test installs the tools the tests need)")
    });
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{cmd:?} panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `len` pseudo-random bytes, a fixed function of `seed`.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        data.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    data.truncate(len);
    data
}

/// Writes [`data`]`(len, seed)` to `path`, creating its directory.
pub fn write_data(path: &Path, len: usize, seed: u64) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, data(len, seed)).unwrap();
}

/// A nested directory of files with awkward sizes (zero, one byte,
/// exactly a piece, and pieces that straddle files).
pub fn make_tree(root: &Path) -> Vec<(String, usize)> {
    let files = [
        ("a.img", 700_000usize),
        ("empty", 0),
        ("one", 1),
        ("sub/b.bin", 262_144),
        ("sub/deeper/c.bin", 123_457),
        ("sub/deeper/d e.txt", 5),
        ("z/last", 300_001),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        write_data(&root.join(name), *len, i as u64 + 1);
    }
    files.iter().map(|(n, l)| (n.to_string(), *l)).collect()
}

/// Flips one bit of the byte at `offset` in `path`.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize] ^= 0x01;
    std::fs::write(path, data).unwrap();
}

/// `shoal show --json` of a torrent or magnet.
pub fn show_json(torrent: &str) -> serde_json::Value {
    let out = run_ok(shoal().args(["show", "--json", torrent]));
    serde_json::from_str(&out).unwrap()
}

/// `shoal verify --json`, returning its exit code and report.
pub fn verify_json(torrent: &Path, data: &Path) -> (i32, serde_json::Value) {
    let out = run(shoal().arg("verify").arg("--json").arg(torrent).arg(data));
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Path as a string, for command arguments.
pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Paths of the files `shoal show --json` lists, sorted.
pub fn listed_files(v: &serde_json::Value) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["length"].as_u64().unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// A path under `dir`.
pub fn p(dir: &Path, rel: &str) -> PathBuf {
    dir.join(rel)
}
pub mod clients;
pub mod mesh;
pub mod netns;
pub mod node;
pub mod proc;
