//! `shoal demo` end to end: a tracker and three nodes in one process on
//! loopback distribute a generated 16 MiB file; the command must verify
//! every copy, report the ratio to the fluid lower bound, exit 0 and
//! leave no temporary directory behind.

mod common;

use common::{run, shoal, tempdir};

#[test]
fn demo_distributes_verifies_and_cleans_up() {
    let dir = tempdir();
    let out = run(shoal()
        .args([
            "demo", "--size", "16M", "--nodes", "3", "--rate", "50M", "--dir",
        ])
        .arg(dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("every copy verified"), "{stdout}");
    assert!(stdout.contains("2 nodes got 16.0 MiB each"), "{stdout}");
    // T_min for 16 MiB at 50 MiB/s per node is 0.32 s; the demo's own
    // time cannot beat it, so the ratio is at least 1.
    let ratio: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ratio to T_min: "))
        .unwrap_or_else(|| panic!("no ratio in:\n{stdout}"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        ratio >= 1.0,
        "faster than the fluid bound: {ratio}\n{stdout}"
    );
    assert!(stdout.contains("T_min = 0.32 s"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");

    // Fewer than two nodes is refused.
    let out = run(shoal().args(["demo", "--nodes", "1"]));
    assert_eq!(out.status.code(), Some(2));
}
