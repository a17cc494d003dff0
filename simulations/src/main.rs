//! `shoal-sim run <scenario.toml> [--nodes N] [--seed S] [--out DIR] ...`:
//! runs a scenario and prints completion quantiles against the fluid
//! bound, fault counters and, with a `[tracker]` section, how long the
//! replicated peer tables took to converge.

use std::io::{ErrorKind, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::de::value::StrDeserializer;
use serde::de::IntoDeserializer;
use serde::Deserialize;
use shoal_proto::swarm::LeecherChoking;
use shoal_sim::run::run_scenario_with;
use shoal_sim::scenario::{DiscoveryMode, Scenario};

/// mimalloc rather than glibc's malloc: at 5,000 nodes nearly every event
/// lands on memory that is not in cache, and mimalloc's size-class pages
/// keep a node's small allocations closer together. 5,000 nodes, 256 MiB
/// flash crowd, four interleaved pairs: 28.0-32.3 s of CPU with glibc,
/// 22.7-25.4 s with mimalloc, the same output (`benches/RESULTS.md`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `println!`, except that a failed write never panics: a reader that went
/// away (`shoal-sim run ... | head -3`) ends the run quietly with status
/// 141, as SIGPIPE ends a C tool, and any other failure (a full disk under
/// `> file`) is reported on stderr with status 1.
macro_rules! outln {
    ($($arg:tt)*) => {
        out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

fn out(args: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) else {
        return;
    };
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    let _ = writeln!(std::io::stderr(), "Error: cannot write the report: {e}");
    std::process::exit(1);
}

#[derive(Debug, Parser)]
#[command(about = "Simulates shoal swarms over a discrete-event network")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs one scenario.
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Overrides the number of leechers.
        #[arg(long)]
        nodes: Option<usize>,
        /// Overrides the random seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Overrides the torrent size, MiB.
        #[arg(long)]
        file_mib: Option<u64>,
        /// Overrides the piece size, KiB (default: as `shoal create` cuts
        /// the file).
        #[arg(long)]
        piece_kib: Option<u64>,
        /// Overrides the degree (peers each node dials).
        #[arg(long)]
        degree: Option<usize>,
        /// Overrides how nodes find each other: graph or tracker.
        #[arg(long)]
        discovery: Option<String>,
        /// Overrides the swarm's request (block) size, KiB.
        #[arg(long)]
        block_kib: Option<u32>,
        /// Overrides how leechers rank peers for their upload slots:
        /// reciprocate or furthest-behind.
        #[arg(long)]
        leecher_choking: Option<String>,
        /// Prints progress to stderr as the run goes.
        #[arg(long)]
        progress: bool,
        /// Threads to run the two parts of the nodes on: 1 or 2 (default:
        /// 2 if the machine has two cores). The result is the same either
        /// way; only the wall time differs.
        #[arg(long)]
        threads: Option<usize>,
        /// Writes completions.csv and cdf.svg into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let Cmd::Run {
        scenario,
        nodes,
        seed,
        file_mib,
        piece_kib,
        degree,
        discovery,
        block_kib,
        leecher_choking,
        progress,
        threads,
        out: out_dir,
    } = Cli::parse().cmd;
    let mut s = Scenario::load(&scenario)?;
    if let Some(n) = nodes {
        s.nodes = n;
    }
    if let Some(v) = seed {
        s.seed = v;
    }
    if let Some(v) = file_mib {
        s.file_mib = v;
    }
    if let Some(v) = piece_kib {
        s.piece_kib = Some(v);
    }
    if let Some(v) = degree {
        s.degree = v;
    }
    if let Some(v) = discovery {
        s.discovery = match v.as_str() {
            "graph" => DiscoveryMode::Graph,
            "tracker" => DiscoveryMode::Tracker,
            _ => anyhow::bail!("--discovery is graph or tracker, not {v:?}"),
        };
    }
    if let Some(v) = block_kib {
        s.swarm.block_kib = Some(v);
    }
    if let Some(v) = leecher_choking {
        // As a scenario spells it: proto's serde names are the one list.
        let de: StrDeserializer<'_, serde::de::value::Error> = v.as_str().into_deserializer();
        s.swarm.leecher_choking = Some(
            LeecherChoking::deserialize(de)
                .map_err(|e| anyhow::anyhow!("--leecher-choking: {e}"))?,
        );
    }
    s.check()?;
    let (out, wall, replication) = run_scenario_with(&s, progress, threads)?;
    // Files first: a report cut short (its reader went away) must not
    // cost the files.
    if let Some(dir) = &out_dir {
        let title = format!("{}: {} leechers, seed {}", s.name, s.nodes, s.seed);
        shoal_sim::plot::write_outputs(&out, &title, dir)?;
    }
    let f = out.file_bytes as f64;
    let piece_kib = s.geometry_bytes()?.1 >> 10;
    let staying = out.completions_us();
    let done = staying.iter().filter(|c| c.is_some()).count();
    let discovery = match s.discovery {
        DiscoveryMode::Graph => format!("degree {}", s.degree),
        DiscoveryMode::Tracker => "peer books, tracker and PEX".to_string(),
    };
    // Named only when not the default, so default runs print as before.
    let fleet = match s.swarm.leecher_choking {
        Some(LeecherChoking::FurthestBehind) => ", leechers rank furthest behind first",
        _ => "",
    };
    outln!(
        "scenario {} seed {}: {} leechers + {} seeder(s), {:.0} MiB in {} KiB pieces, {discovery}{fleet}",
        s.name,
        s.seed,
        s.nodes,
        s.seeders.count,
        f / (1 << 20) as f64,
        piece_kib,
    );
    outln!("completed        {done}/{} staying", staying.len());
    let q = |p| {
        out.quantile_secs(p)
            .map_or("-".to_string(), |t| format!("{t:.3} s"))
    };
    outln!(
        "completion       p50 {}  p90 {}  p99 {}  max {}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    outln!("T_min            {:.3} s", out.t_min);
    outln!(
        "last / T_min     {}",
        out.ratio().map_or("-".to_string(), |r| format!("{r:.3}"))
    );
    outln!("seed uploaded/F  {:.3}", out.seed_uploaded as f64 / f);
    if let Some(b) = out.cross_region_bytes {
        outln!("crossed regions  {:.3} × F", b as f64 / f);
    }
    let peaks: Vec<u32> = out.nodes.iter().map(|n| n.peak_conns).collect();
    outln!(
        "connections      peak per leecher: mean {:.1}, min {}, max {}; seeders' peak {}",
        peaks.iter().map(|&p| f64::from(p)).sum::<f64>() / peaks.len().max(1) as f64,
        peaks.iter().min().unwrap_or(&0),
        peaks.iter().max().unwrap_or(&0),
        out.seed_peak_conns
    );
    if out.dials.0 > 0 {
        outln!(
            "dials            {} by peer books, {} refused or failed",
            out.dials.0,
            out.dials.1
        );
    }
    let left = out.nodes.iter().filter(|n| n.left_us.is_some()).count();
    let corrupt = out.nodes.iter().filter(|n| n.corrupt).count();
    if left + corrupt > 0 || out.seeds_left_us.is_some() {
        outln!(
            "faults           {left} left/crashed, {corrupt} corrupt, {} pieces failed their hash, {} bans, {} dirty completions{}",
            out.failed_pieces,
            out.bans.len(),
            out.dirty_completions(),
            out.seeds_left_us
                .map_or(String::new(), |t| format!(", seeds left at {:.3} s", t as f64 / 1e6))
        );
    }
    if let Some(r) = replication {
        let failed = if r.failed_attempts > 0 {
            format!(
                " ({} applied per replica; {} attempts failed)",
                r.applied_by
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("/"),
                r.failed_attempts
            )
        } else {
            String::new()
        };
        outln!(
            "replication      {} replicas live, {} announces{failed}, {} messages ({} lost), converged {}",
            r.live,
            r.announces,
            r.messages,
            r.lost,
            r.convergence_secs()
                .map_or("never".to_string(), |t| format!(
                    "{t:.3} s after the last write/heal (at {:.3} s)",
                    r.converged_us.unwrap_or(0) as f64 / 1e6
                ))
        );
        for (k, t) in r.after_heal_us.iter().enumerate() {
            outln!(
                "partition {k}      replicas agreed {} after the heal",
                t.map_or("never".to_string(), |t| format!("{:.3} s", t as f64 / 1e6))
            );
        }
    }
    outln!(
        "events           {} ({} stale), simulated {:.3} s",
        out.events,
        out.stale_events,
        out.end_us as f64 / 1e6
    );
    outln!(
        "wall             {:.3} s, {:.0} events/s",
        wall.as_secs_f64(),
        out.events as f64 / wall.as_secs_f64().max(1e-9)
    );
    if let Some(dir) = &out_dir {
        outln!(
            "wrote            {}/completions.csv, cdf.svg",
            dir.display()
        );
    }
    if !out.all_completed() {
        anyhow::bail!("not every staying leecher completed before the time limit");
    }
    Ok(())
}
