//! `shoal seed`: share a file or directory until SIGINT or SIGTERM. Makes
//! the torrent first unless one is given, announces to its trackers, and
//! announces `stopped` on the way out.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use clap::Args;
use shoal::create::{create, CreateOptions, Source};
use shoal::disk::default_threads;
use shoal::swarm::Role;

use super::peer;

/// Seed a file or directory.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The file or directory to share.
    pub path: PathBuf,
    /// Its .torrent; made (and written to -o) when not given.
    #[arg(long, value_name = "FILE")]
    pub torrent: Option<PathBuf>,
    /// Where to write the torrent made [default: NAME.torrent here].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Tracker announce URL; repeat for fail-over tiers, commas make one
    /// tier. Overrides the torrent's trackers.
    #[arg(short = 't', long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// The node's data directory, listen address and rate limits.
    #[command(flatten)]
    pub node: peer::NodeArgs,
}

pub fn run(a: SeedArgs) -> anyhow::Result<ExitCode> {
    peer::init_logging();
    let tiers = peer::tiers(&a.trackers);
    let meta = match &a.torrent {
        Some(t) => super::read_torrent(t)?,
        None => {
            let source = Source::scan(&a.path)?;
            let output = a
                .output
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", source.name)));
            let opts = CreateOptions {
                trackers: tiers.clone(),
                piece_length: None,
                private: false,
                comment: None,
                blake3: true,
                threads: default_threads(),
                creation_date: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs() as i64),
            };
            let m = create(&source, &opts, &AtomicU64::new(0))?;
            let tmp = output.with_extension("torrent.part");
            std::fs::write(&tmp, m.to_bytes())
                .and_then(|()| std::fs::rename(&tmp, &output))
                .with_context(|| format!("{}: cannot write", output.display()))?;
            outln!("wrote {}", output.display());
            m
        }
    };
    let canonical = a
        .path
        .canonicalize()
        .with_context(|| format!("{}: cannot read", a.path.display()))?;
    let name = canonical.file_name().and_then(|n| n.to_str()).unwrap_or("");
    anyhow::ensure!(
        name == meta.info.name,
        "{}: the torrent's content is named {:?}; rename the path to match",
        a.path.display(),
        meta.info.name
    );
    let target_dir = canonical
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let tiers = if tiers.is_empty() {
        peer::torrent_tiers(&meta)
    } else {
        tiers
    };
    let ih = meta.info_hash;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let signals = peer::watch_signals()?;
        let running = peer::start(&a.node, meta, target_dir, Role::Seed, tiers).await?;
        let status = running.torrent.status().await?;
        if !status.complete {
            running.stop().await;
            anyhow::bail!(
                "{}: only {} of {} pieces match the torrent; nothing to seed in full",
                a.path.display(),
                status.have,
                status.pieces
            );
        }
        outln!("infohash {ih}");
        outln!("listening on {}", running.listen);
        let _ = std::io::stdout().flush();
        signals.await;
        tracing::info!("shutting down");
        running.stop().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
