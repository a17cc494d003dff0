//! Rate limits end to end over QUIC on 127.0.0.1, seed and leecher in one
//! process: a limited seed takes at least as long as its limit allows and
//! not much longer, per-torrent limits hold, a limit changed mid-transfer
//! takes effect at once, and (ignored by default, run in release) the
//! unlimited loopback throughput, to show the limiter's fast path costs
//! nothing.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::mesh::{make_torrent, start, wait_status, MeshNode};
use shoal::swarm::Role;

const MIB: u64 = 1024 * 1024;

/// A generated file of `len` bytes at `dir/src/image.bin` and its torrent.
fn fixture(dir: &Path, len: u64, piece: Option<u64>) -> (shoal_proto::Metainfo, Vec<u8>) {
    let src = dir.join("src").join("image.bin");
    common::write_data(&src, len as usize, 42);
    let meta = make_torrent(&src, piece, vec![]);
    (meta, std::fs::read(&src).unwrap())
}

const PIECE: u64 = 256 * 1024;

/// Waits for `t` to complete, at most `limit`.
async fn complete(what: &str, t: &shoal::swarm::TorrentHandle, limit: Duration) {
    wait_status(what, limit, t, |s| s.complete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_upload_limit_bounds_the_transfer_time() {
    let tmp = common::tempdir();
    let size = 16 * MIB;
    let limit = 4 * MIB;
    let (meta, content) = fixture(tmp.path(), size, Some(PIECE));
    let seed = MeshNode::new(&tmp.path().join("seed-db")).await;
    seed.mesh.endpoint().rates().set_node(Some(limit), None);
    let st = seed
        .mesh
        .start(start(&meta, &tmp.path().join("src"), Role::Seed, vec![]))
        .await
        .unwrap();
    let leech = MeshNode::new(&tmp.path().join("leech-db")).await;
    let target = tmp.path().join("out");
    let began = Instant::now();
    let lt = leech
        .mesh
        .start(start(&meta, &target, Role::Leech, vec![seed.dial()]))
        .await
        .unwrap();
    // Pieces arrive steadily at the limit, not all at once at the end.
    tokio::time::sleep_until((began + Duration::from_secs(2)).into()).await;
    let halfway = u64::from(lt.status().await.unwrap().have) * PIECE;
    println!("after 2 s: {} KiB stored", halfway / 1024);
    assert!(
        halfway >= limit / 2,
        "only {halfway} bytes stored after 2 s at {limit} B/s"
    );
    complete("limited transfer", &lt, Duration::from_secs(60)).await;
    let secs = began.elapsed().as_secs_f64();
    let rate = size as f64 / secs;
    println!(
        "16 MiB at a 4 MiB/s upload limit: {secs:.2} s, {:.2} MiB/s",
        rate / MIB as f64
    );
    // The limit guarantees the lower bound on time (less a burst); the
    // upper bound only says the limiter does not throttle far below it.
    assert!(secs >= (size / limit) as f64 * 0.8, "too fast: {secs:.2} s");
    assert!(
        rate >= limit as f64 * 0.5,
        "far below the limit: {secs:.2} s"
    );
    assert!(std::fs::read(target.join("image.bin")).unwrap() == content);
    leech.stop(lt).await;
    seed.stop(st).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torrent_limit_slows_only_that_torrent() {
    let tmp = common::tempdir();
    let size = 8 * MIB;
    let limit = 2 * MIB;
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    let (meta_a, content_a) = fixture(&a_dir, size, Some(PIECE));
    let b_src = b_dir.join("src").join("other.bin");
    common::write_data(&b_src, size as usize, 43);
    let meta_b = make_torrent(&b_src, Some(PIECE), vec![]);
    let seed = MeshNode::new(&tmp.path().join("seed-db")).await;
    let sa = seed
        .mesh
        .start(start(&meta_a, &a_dir.join("src"), Role::Seed, vec![]))
        .await
        .unwrap();
    let sb = seed
        .mesh
        .start(start(&meta_b, &b_dir.join("src"), Role::Seed, vec![]))
        .await
        .unwrap();
    // The limit is the leecher's, on torrent A's downloads only.
    let leech = MeshNode::new(&tmp.path().join("leech-db")).await;
    let rates = leech.mesh.endpoint().rates().clone();
    rates.set_torrent(meta_a.info_hash, None, Some(limit));
    assert_eq!(rates.torrent(meta_a.info_hash), (None, Some(limit)));
    assert_eq!(rates.node(), (None, None));
    let began = Instant::now();
    let out = tmp.path().join("out");
    let la = leech
        .mesh
        .start(start(&meta_a, &out, Role::Leech, vec![seed.dial()]))
        .await
        .unwrap();
    let lb = leech
        .mesh
        .start(start(&meta_b, &out, Role::Leech, vec![seed.dial()]))
        .await
        .unwrap();
    complete("unlimited torrent B", &lb, Duration::from_secs(60)).await;
    let b_secs = began.elapsed().as_secs_f64();
    let a_at_b = la.status().await.unwrap();
    complete("limited torrent A", &la, Duration::from_secs(60)).await;
    let a_secs = began.elapsed().as_secs_f64();
    println!("8 MiB each: A (2 MiB/s download limit) {a_secs:.2} s, B (none) {b_secs:.2} s");
    assert!(
        a_secs >= (size / limit) as f64 * 0.8,
        "A too fast: {a_secs:.2} s"
    );
    assert!(
        !a_at_b.complete && b_secs < a_secs / 2.0,
        "B was held back too: B {b_secs:.2} s, A {a_secs:.2} s"
    );
    assert!(std::fs::read(out.join("image.bin")).unwrap() == content_a);
    leech.stop(la).await;
    drop(lb);
    seed.stop(sa).await;
    drop(sb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_changed_mid_transfer_applies_at_once() {
    let tmp = common::tempdir();
    let size = 16 * MIB;
    let (meta, content) = fixture(tmp.path(), size, Some(PIECE));
    let seed = MeshNode::new(&tmp.path().join("seed-db")).await;
    let st = seed
        .mesh
        .start(start(&meta, &tmp.path().join("src"), Role::Seed, vec![]))
        .await
        .unwrap();
    let leech = MeshNode::new(&tmp.path().join("leech-db")).await;
    leech.mesh.endpoint().rates().set_node(None, Some(MIB));
    let target = tmp.path().join("out");
    let began = Instant::now();
    let lt = leech
        .mesh
        .start(start(&meta, &target, Role::Leech, vec![seed.dial()]))
        .await
        .unwrap();
    wait_status(
        "first pieces at 1 MiB/s",
        Duration::from_secs(30),
        &lt,
        |s| s.have >= 1,
    )
    .await;
    tokio::time::sleep_until((began + Duration::from_secs(2)).into()).await;
    let at_change = lt.status().await.unwrap();
    let limited_secs = began.elapsed().as_secs_f64();
    // At 1 MiB/s, with a burst and a piece in flight of slack.
    let got = u64::from(at_change.have) * PIECE;
    assert!(
        got as f64 <= limited_secs * MIB as f64 + 2.0 * MIB as f64,
        "{got} bytes in {limited_secs:.2} s at a 1 MiB/s limit"
    );
    leech.mesh.endpoint().rates().set_node(None, None);
    let changed = Instant::now();
    complete("after the limit is lifted", &lt, Duration::from_secs(60)).await;
    let rest = changed.elapsed().as_secs_f64();
    let left = size - got;
    println!(
        "{} of 16 MiB in {limited_secs:.2} s at 1 MiB/s, the other {} MiB in {rest:.2} s unlimited",
        got / MIB,
        left / MIB
    );
    // At the old rate the rest would take `left / 1 MiB/s` seconds.
    assert!(
        rest < left as f64 / MIB as f64 / 2.0,
        "the lifted limit still held: {rest:.2} s for {left} bytes"
    );
    assert!(std::fs::read(target.join("image.bin")).unwrap() == content);
    leech.stop(lt).await;
    seed.stop(st).await;
}

/// One seed, one leecher, no limit: prints the throughput. Run in release:
/// `cargo test --release --test ratelimit unlimited_loopback_throughput -- --ignored --nocapture`
/// (`SHOAL_BENCH_MIB` sets the size, 256 by default;
/// `SHOAL_BENCH_LIMIT_MIB` limits the seed's upload instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run in release"]
async fn unlimited_loopback_throughput() {
    let size: u64 = std::env::var("SHOAL_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
        * MIB;
    let tmp = common::tempdir();
    let (meta, content) = fixture(tmp.path(), size, None);
    // With SHOAL_BENCH_LIMIT_MIB the seed's upload is limited instead,
    // to see how close a high limit is met.
    let limit = std::env::var("SHOAL_BENCH_LIMIT_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|l| l * MIB);
    let seed = MeshNode::new(&tmp.path().join("seed-db")).await;
    seed.mesh.endpoint().rates().set_node(limit, None);
    let st = seed
        .mesh
        .start(start(&meta, &tmp.path().join("src"), Role::Seed, vec![]))
        .await
        .unwrap();
    assert!(st.is_complete());
    let leech = MeshNode::new(&tmp.path().join("leech-db")).await;
    let target = tmp.path().join("out");
    let began = Instant::now();
    let lt = leech
        .mesh
        .start(start(&meta, &target, Role::Leech, vec![seed.dial()]))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(300), lt.wait_complete())
        .await
        .expect("completes within 300 s")
        .unwrap();
    let secs = began.elapsed().as_secs_f64();
    println!(
        "upload limit {limit:?} B/s: {} MiB in {secs:.2} s = {:.0} MiB/s",
        size / MIB,
        size as f64 / MIB as f64 / secs
    );
    assert!(std::fs::read(target.join("image.bin")).unwrap() == content);
    leech.stop(lt).await;
    seed.stop(st).await;
}
