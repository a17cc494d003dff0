//! Block (request) size on one loopback link, through the real path: two
//! in-process nodes, each with its own QUIC endpoint on 127.0.0.1, storage
//! and mesh; a seed and a leecher whose swarm requests blocks of the size
//! under test (`SwarmConfig::block_size`). Each run starts a fresh seed
//! (importing the same data in place) and a fresh leecher, and times the
//! leecher from start to complete (every piece verified and stored).
//! Sizes are interleaved round by round, each round in a rotated order, so
//! drift on a shared machine hits every size alike.
//!
//! Reports MiB/s and the CPU seconds both nodes spent per GiB moved (the
//! process's user + system time: seed and leecher share the process).
//!
//! ```text
//! cargo bench --bench block_size -- [--mib 256] [--rounds 3] \
//!     [--piece-mib 4] [--sizes 16,64,128,256,1024] [--dir /dev/shm]
//! ```
//!
//! Files live in `--dir` (default `/dev/shm` when it exists), so the disk
//! does not hide what the transport does.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shoal::create::{create, CreateOptions, Source};
use shoal::swarm::{PeerDial, Role, StartTorrent};
use shoal::transport::install_crypto_provider;
use shoal_proto::Metainfo;

// The in-process nodes the integration tests use.
#[path = "../tests/common/mesh.rs"]
mod mesh;
use mesh::MeshNode;

/// Longest a single transfer may take before the run is abandoned.
const RUN_LIMIT: Duration = Duration::from_secs(600);

struct Args {
    mib: usize,
    rounds: usize,
    piece_mib: u64,
    sizes_kib: Vec<u32>,
    dir: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        mib: 256,
        rounds: 3,
        piece_mib: 4,
        sizes_kib: vec![16, 64, 128, 256, 1024],
        dir: if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // `cargo bench` passes `--bench` to every bench binary.
        if flag == "--bench" {
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mib" => a.mib = value.parse()?,
            "--rounds" => a.rounds = value.parse()?,
            "--piece-mib" => a.piece_mib = value.parse()?,
            "--sizes" => {
                a.sizes_kib = value
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--dir" => a.dir = PathBuf::from(value),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.mib == 0 || a.rounds == 0 || a.sizes_kib.is_empty() {
        bail!("--mib, --rounds and --sizes must be non-empty");
    }
    Ok(a)
}

/// User + system CPU seconds of this process so far. `/proc` counts in
/// USER_HZ, which Linux fixes at 100 for user space.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces; utime and stime are fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')').context("odd /proc/self/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).context("no utime")?.parse::<u64>()?
        + f.get(12).context("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// A [`StartTorrent`] with `block`-byte requests.
fn start(
    meta: &Metainfo,
    target: &Path,
    role: Role,
    block: u32,
    peers: Vec<PeerDial>,
) -> StartTorrent {
    let mut s = mesh::start(meta, target, role, peers);
    s.config.block_size = block;
    s
}

/// One transfer: seconds and CPU seconds.
async fn run_once(
    work: &Path,
    meta: &Metainfo,
    data_dir: &Path,
    block: u32,
) -> anyhow::Result<(f64, f64)> {
    let run = tempfile::tempdir_in(work)?;
    let seed = MeshNode::new(&run.path().join("seed-db")).await;
    let st = seed
        .mesh
        .start(start(meta, data_dir, Role::Seed, block, vec![]))
        .await?;
    if !st.is_complete() {
        bail!("the seed did not import its data");
    }
    let leech = MeshNode::new(&run.path().join("leech-db")).await;
    let target = run.path().join("leech");
    let (cpu0, t0) = (cpu_seconds()?, Instant::now());
    let lt = leech
        .mesh
        .start(start(meta, &target, Role::Leech, block, vec![seed.dial()]))
        .await?;
    tokio::time::timeout(RUN_LIMIT, lt.wait_complete())
        .await
        .context("transfer timed out")??;
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds()? - cpu0);
    let s = lt.status().await?;
    if s.pieces_downloaded != meta.info.piece_count() || s.pieces_failed != 0 {
        bail!(
            "leecher downloaded {} of {} pieces, {} failed",
            s.pieces_downloaded,
            meta.info.piece_count(),
            s.pieces_failed
        );
    }
    leech.stop(lt).await;
    seed.stop(st).await;
    Ok((secs, cpu))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    install_crypto_provider();
    let work = tempfile::tempdir_in(&a.dir)?;
    let data_dir = work.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    let file = data_dir.join("image.bin");
    write_data(&file, a.mib << 20)?;
    let opts = CreateOptions {
        trackers: vec![],
        piece_length: Some(a.piece_mib << 20),
        private: false,
        comment: None,
        blake3: true,
        threads: shoal::disk::default_threads(),
        creation_date: None,
    };
    let meta = create(&Source::scan(&file)?, &opts, &AtomicU64::new(0))?;
    let gib = (a.mib as f64) / 1024.0;
    println!(
        "block size on loopback: {} MiB in {} pieces of {} MiB, {} rounds, files in {}",
        a.mib,
        meta.info.piece_count(),
        a.piece_mib,
        a.rounds,
        a.dir.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let n = a.sizes_kib.len();
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); n];
    for round in 0..a.rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let block = a.sizes_kib[i] * 1024;
            let (secs, cpu) = rt.block_on(run_once(work.path(), &meta, &data_dir, block))?;
            println!(
                "round {} block {:>5} KiB: {:7.1} MiB/s, {:5.2} CPU s/GiB",
                round + 1,
                a.sizes_kib[i],
                a.mib as f64 / secs,
                cpu / gib
            );
            results[i].push((secs, cpu));
        }
    }
    println!();
    println!("| block | MiB/s (median) | MiB/s (runs) | CPU s/GiB (median) |");
    println!("| ---: | ---: | --- | ---: |");
    for (i, runs) in results.iter().enumerate() {
        let rates: Vec<f64> = runs.iter().map(|(s, _)| a.mib as f64 / s).collect();
        let cpus: Vec<f64> = runs.iter().map(|(_, c)| c / gib).collect();
        let list: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {} KiB | {:.0} | {} | {:.2} |",
            a.sizes_kib[i],
            median(rates.clone()),
            list.join(", "),
            median(cpus)
        );
    }
    Ok(())
}

/// `len` pseudo-random bytes (xorshift64*), incompressible and fixed.
fn write_data(path: &Path, len: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = len;
    let mut buf = Vec::with_capacity(1 << 16);
    while left > 0 {
        buf.clear();
        while buf.len() < (1 << 16).min(left) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            buf.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        buf.truncate(left.min(buf.len()));
        out.write_all(&buf)?;
        left -= buf.len();
    }
    out.flush()?;
    Ok(())
}
