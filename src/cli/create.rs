//! `shoal create`: hash a file or directory into a .torrent.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use clap::Args;
use shoal::create::{create, CreateOptions, Source};
use shoal::disk::default_threads;
use shoal::progress::ByteProgress;
use shoal_proto::Magnet;

/// Make a .torrent from a file or a directory.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The file or directory to share.
    pub path: PathBuf,
    /// Where to write the torrent [default: NAME.torrent here].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Tracker announce URL. Repeat for fail-over tiers, in order; a
    /// comma-separated list makes one tier of equals.
    #[arg(short = 't', long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Piece size, a power of two such as 1M or 256K [default: about
    /// 1,000-2,000 pieces, 256 KiB to 16 MiB].
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    pub piece_size: Option<u64>,
    /// Mark the torrent private (BEP 27): no DHT or peer exchange.
    #[arg(long)]
    pub private: bool,
    /// A free-text comment.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// Leave out blake3 piece hashes (SHA-1 only, as stock tools make).
    #[arg(long)]
    pub no_blake3: bool,
    /// Overwrite the output file if it exists.
    #[arg(short, long)]
    pub force: bool,
    /// Hashing threads [default: every core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

pub fn run(a: CreateArgs) -> anyhow::Result<ExitCode> {
    let source = Source::scan(&a.path)?;
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", source.name)));
    if output.exists() && !a.force {
        anyhow::bail!(
            "{}: already exists (use --force to overwrite)",
            output.display()
        );
    }
    let opts = CreateOptions {
        trackers: a
            .trackers
            .iter()
            .map(|t| {
                t.split(',')
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty())
                    .collect()
            })
            .collect(),
        piece_length: a.piece_size,
        private: a.private,
        comment: a.comment,
        blake3: !a.no_blake3,
        threads: a.threads.unwrap_or_else(default_threads),
        creation_date: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs() as i64),
    };
    let counter = AtomicU64::new(0);
    let bar = ByteProgress::new(source.total(), "hashing");
    let m = bar.follow(&counter, || create(&source, &opts, &counter))?;
    // Write beside the target and rename, so a crash never leaves a
    // half-written torrent under the final name.
    let tmp = output.with_extension("torrent.part");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    f.write_all(&m.to_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, &output)
        .with_context(|| format!("{}: cannot write", output.display()))?;
    outln!("wrote {}", output.display());
    outln!("infohash {}", m.info_hash);
    outln!(
        "pieces {} x {} bytes",
        m.info.piece_count(),
        m.info.piece_length
    );
    outln!("magnet {}", Magnet::from_metainfo(&m));
    Ok(ExitCode::SUCCESS)
}
