//! `shoal demo`: a whole distribution on one machine. It starts a tracker
//! and several nodes in this process on loopback, each node with its own
//! data directory and QUIC port; generates a file; makes its torrent; seeds
//! it from the first node and adds it to the others; shows live progress
//! per node; verifies every copy; and reports the time, the throughput and
//! the ratio to the fluid lower bound
//! `T_min = max(F/u_seed, F/d_min, N·F/(u_seed + Σu_i))`.
//!
//! Loopback has no link capacity of its own, so every node gets the same
//! node-wide upload and download limit (`--rate`); the bound is computed
//! from it. Everything lives under one temporary directory that is removed
//! on the way out, whatever happens. Exit status 0 only if every copy
//! verifies.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use shoal::check::check;
use shoal::config::{Config, LogConfig, LogFormat, MeshConfig};
use shoal::create::{create, CreateOptions, Source};
use shoal::disk::{default_threads, Layout};
use shoal::node::Node;
use shoal::torrents::{AddRequest, AddSource, State, Torrents, TorrentsSetup};
use shoal_proto::InfoHash;

use super::api_client::human;

/// Run a whole distribution on this machine.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the generated file, such as 16M or 1G.
    #[arg(long, default_value = "256M", value_parser = super::parse_size)]
    pub size: u64,
    /// Nodes, the seed included (at least 2).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Where to make the temporary directory [default: the system's].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Upload and download limit of every node, bytes/s (such as 100M); 0
    /// for none, which leaves no bound to compare with.
    #[arg(long, default_value = "100M", value_parser = super::parse_size)]
    pub rate: u64,
}

/// Removes the demo's directory when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.nodes >= 2,
        "--nodes must be at least 2 (a seed and a downloader)"
    );
    anyhow::ensure!(
        a.nodes <= 64,
        "--nodes above 64 is more than one machine shows well"
    );
    anyhow::ensure!(a.size > 0, "--size must be positive");
    shoal::logging::init(&LogConfig {
        format: LogFormat::Human,
        filter: "warn".into(),
    });
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let root = base.join(format!("shoal-demo-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("{}: cannot create", root.display()))?;
    let guard = TempDir(root.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(demo(&a, &root));
    drop(rt);
    drop(guard);
    result
}

async fn demo(a: &DemoArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let mut signals = Box::pin(super::peer::watch_signals()?);
    let mut tracker_cfg = Config {
        data_dir: root.join("tracker"),
        ..Config::default()
    };
    tracker_cfg.http.listen = "127.0.0.1:0".parse()?;
    tracker_cfg.gossip.listen = "127.0.0.1:0".parse()?;
    tracker_cfg.tracker.enabled = true;
    tracker_cfg.tracker.interval_secs = 5;
    tracker_cfg.tracker.min_interval_secs = 1;
    tracker_cfg.mesh.enabled = false;
    let tracker = Node::start(tracker_cfg, None).await?;
    let announce = format!("http://{}/announce", tracker.http_addr);

    let seed_dir = root.join("node-0").join("downloads");
    let file = seed_dir.join("demo.img");
    outln!("generating {} of data ...", human(a.size));
    let (f, size) = (file.clone(), a.size);
    tokio::task::spawn_blocking(move || generate(&f, size))
        .await
        .context("generator task failed")??;
    let (f, url) = (file.clone(), announce.clone());
    let meta = tokio::task::spawn_blocking(move || {
        let opts = CreateOptions {
            trackers: vec![vec![url]],
            piece_length: None,
            private: false,
            comment: Some("shoal demo".into()),
            blake3: true,
            threads: default_threads(),
            creation_date: None,
        };
        create(&Source::scan(&f)?, &opts, &AtomicU64::new(0))
    })
    .await
    .context("hashing task failed")??;
    let ih = meta.info_hash;
    outln!(
        "torrent {ih}: {} pieces of {}",
        meta.info.piece_count(),
        human(meta.info.piece_length)
    );

    let limit = (a.rate > 0).then_some(a.rate);
    let mut nodes = Vec::new();
    for i in 0..a.nodes {
        let dir = root.join(format!("node-{i}"));
        let t = Torrents::start(TorrentsSetup {
            data_dir: dir.join("data"),
            cfg: MeshConfig {
                listen: "127.0.0.1:0".parse()?,
                download_dir: dir.join("downloads"),
                upload_limit: a.rate,
                download_limit: a.rate,
                ..MeshConfig::default()
            },
            keypair: libp2p::identity::Keypair::generate_ed25519(),
            gossip_trackers: None,
        })
        .await
        .with_context(|| format!("node {i} did not start"))?;
        nodes.push(t);
    }
    let outcome = distribute(a, &nodes, &meta, &seed_dir, &mut signals).await;
    for t in nodes {
        t.stop().await;
    }
    tracker.stop(Duration::from_secs(5)).await;
    let (elapsed, verified, intact) = outcome?;

    let f = a.size as f64;
    let leechers = (a.nodes - 1) as f64;
    outln!();
    outln!(
        "{} nodes got {} each in {:.2} s: {}/s per node, {}/s in total",
        a.nodes - 1,
        human(a.size),
        elapsed,
        human((f / elapsed) as u64),
        human((f * leechers / elapsed) as u64)
    );
    outln!("every node had re-checked its copy after {verified:.2} s");
    match limit {
        Some(r) => {
            let r = r as f64;
            // Every node has upload and download r.
            let (u_seed, d_min, sum_u) = (r, r, leechers * r);
            let t_min = (f / u_seed).max(f / d_min).max(leechers * f / (u_seed + sum_u));
            outln!(
                "fluid lower bound T_min = {t_min:.2} s (every node limited to {}/s each way, since loopback itself has no capacity to bound)",
                human(r as u64)
            );
            outln!("ratio to T_min: {:.2}", elapsed / t_min);
        }
        None => outln!("no rate limit (--rate 0): loopback has no capacity, so there is no bound to compare with"),
    }
    if intact == a.nodes - 1 {
        outln!("every copy verified");
        Ok(ExitCode::SUCCESS)
    } else {
        errln!("error: only {intact} of {} copies verified", a.nodes - 1);
        Ok(ExitCode::from(1))
    }
}

/// Seeds from the first node, adds to the others, shows progress until
/// every downloader is complete, then checks every copy. Returns the
/// seconds from the first add until the last node held every piece and
/// until the last one had re-checked its copy, and how many copies
/// verified.
async fn distribute(
    a: &DemoArgs,
    nodes: &[Torrents],
    meta: &shoal_proto::Metainfo,
    seed_dir: &Path,
    signals: &mut std::pin::Pin<Box<impl std::future::Future<Output = ()>>>,
) -> anyhow::Result<(f64, f64, usize)> {
    let ih = meta.info_hash;
    let bytes = meta.to_bytes();
    nodes[0]
        .add(AddRequest {
            source: AddSource::Metainfo(bytes.clone()),
            target_dir: Some(seed_dir.to_path_buf()),
            paused: false,
        })
        .await?;
    wait_state(&nodes[0], ih, State::Seeding, Duration::from_secs(600)).await?;
    outln!(
        "node 0 is seeding; adding the torrent to {} nodes",
        nodes.len() - 1
    );
    let start = Instant::now();
    for t in &nodes[1..] {
        t.add(AddRequest {
            source: AddSource::Metainfo(bytes.clone()),
            target_dir: None,
            paused: false,
        })
        .await?;
    }
    // A generous bound, so a stuck swarm ends the demo instead of hanging.
    let bound = if a.rate > 0 {
        Duration::from_secs_f64((20.0 * a.size as f64 / a.rate as f64).max(120.0))
    } else {
        Duration::from_secs(600)
    };
    let tty = std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    let mut last_plain = Instant::now();
    // When the last downloader held every piece (polled, so up to a tick
    // late); the bound is about moving bytes, so this is what it is
    // compared with. Its completion re-check comes after.
    let mut transferred: Option<f64> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = signals.as_mut() => bail!("interrupted"),
        }
        let mut lines = Vec::new();
        let mut done = 0;
        let mut have_all = 0;
        for (i, t) in nodes.iter().enumerate() {
            let d = t.get(ih).await?;
            let v = &d.torrent;
            if v.state == State::Failed {
                bail!("node {i}: {}", v.error.clone().unwrap_or_default());
            }
            if i > 0 && v.state == State::Seeding {
                done += 1;
            }
            if i > 0 && v.have == v.pieces {
                have_all += 1;
            }
            lines.push(format!(
                "node {i:>2} {:<11} {:>6.1}%  {:>5}/{:<5} pieces  down {:>10}/s  up {:>10}/s  peers {}",
                format!("{:?}", v.state).to_lowercase(),
                f64::from(v.have) * 100.0 / f64::from(v.pieces.max(1)),
                v.have,
                v.pieces,
                human(v.download_rate),
                human(v.upload_rate),
                v.peers
            ));
        }
        if have_all == nodes.len() - 1 && transferred.is_none() {
            transferred = Some(start.elapsed().as_secs_f64());
        }
        let finished = done == nodes.len() - 1;
        if tty {
            let mut out = std::io::stdout().lock();
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A");
            }
            for l in &lines {
                let _ = writeln!(out, "\r{l}\x1b[K");
            }
            let _ = out.flush();
            drawn = lines.len();
        } else if finished || last_plain.elapsed() >= Duration::from_secs(2) {
            outln!("after {:.1} s:", start.elapsed().as_secs_f64());
            for l in &lines {
                outln!("  {l}");
            }
            last_plain = Instant::now();
        }
        if finished {
            break;
        }
        if start.elapsed() > bound {
            bail!("the distribution did not finish within {bound:?}");
        }
    }
    let verified = start.elapsed().as_secs_f64();
    let elapsed = transferred.unwrap_or(verified);
    let mut intact = 0;
    for (i, t) in nodes.iter().enumerate().skip(1) {
        let dir = t.get(ih).await?.torrent.target_dir;
        let info = meta.info.clone();
        let report = tokio::task::spawn_blocking(move || {
            let layout = Layout::in_dir(&info, &dir);
            check(&info, &layout, default_threads(), &AtomicU64::new(0))
        })
        .await
        .context("verification task failed")?;
        match report {
            Ok(r) if r.is_complete() => intact += 1,
            Ok(r) => errln!("node {i}: {} pieces do not match", r.failed().len()),
            Err(e) => errln!("node {i}: cannot verify: {e}"),
        }
    }
    Ok((elapsed, verified, intact))
}

/// Polls until the torrent reaches `want`; a failure or the deadline is
/// an error.
async fn wait_state(
    t: &Torrents,
    ih: InfoHash,
    want: State,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let v = t.get(ih).await?.torrent;
        if v.state == want {
            return Ok(());
        }
        if v.state == State::Failed {
            bail!("{ih}: {}", v.error.unwrap_or_default());
        }
        if Instant::now() > deadline {
            bail!("{ih} is still {:?} after {within:?}", v.state);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `size` pseudo-random bytes (xorshift64*, fast and incompressible
/// enough) to `path`.
fn generate(path: &Path, size: u64) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let file = std::fs::File::create(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            chunk.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n])
            .with_context(|| format!("{}: cannot write", path.display()))?;
        left -= n as u64;
    }
    w.flush()
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}
