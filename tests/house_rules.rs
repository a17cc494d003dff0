//! Rules of the layout that a build alone would not catch.

/// proto decides; src carries bytes and time. shoal-proto must never pull
/// in an I/O stack, directly or through another crate.
#[test]
fn proto_depends_on_no_io_crates() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "shoal-proto",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.lines().any(|l| l.starts_with("shoal-proto ")),
        "{tree}"
    );
    for line in tree.lines() {
        let name = line.split(' ').next().unwrap_or_default();
        for banned in [
            "tokio", "quinn", "libp2p", "sled", "axum", "hyper", "mio", "socket2",
        ] {
            assert!(
                name != banned && !name.starts_with(&format!("{banned}-")),
                "shoal-proto depends on {name}"
            );
        }
    }
}

/// The simulator runs production's logic, so it may use proto but never
/// the daemon.
#[test]
fn simulator_does_not_depend_on_the_daemon() {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/simulations/Cargo.toml"
    ))
    .unwrap();
    assert!(manifest.contains("shoal-proto"));
    assert!(!manifest
        .lines()
        .any(|l| l.trim_start().starts_with("shoal ")
            || l.trim_start().starts_with("shoal.")
            || l.trim_start().starts_with("shoal=")));
}

/// The top level is fixed by DESIGN.md.
#[test]
fn top_level_layout_is_as_designed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for required in [
        "Cargo.toml",
        "src",
        "proto",
        "simulations",
        "tests",
        "benches",
        "deploy",
        "README.md",
        ".ci",
        "ARCHITECTURE.md",
    ] {
        assert!(root.join(required).exists(), "missing {required}");
    }
    let allowed = [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "proto",
        "simulations",
        "tests",
        "benches",
        "deploy",
        "README.md",
        "ARCHITECTURE.md",
        "target",
        "rustfmt.toml",
        "clippy.toml",
        "shoal-data",
    ];
    for entry in std::fs::read_dir(root).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name.starts_with('.') || allowed.contains(&name.as_str()),
            "unexpected top-level entry {name}"
        );
    }
}
