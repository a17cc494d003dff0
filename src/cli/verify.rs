//! `shoal verify`: check data on disk against a .torrent.
//! Exit status 0 when every piece is good, 1 when any piece is bad or
//! missing, 2 on an error such as an unreadable torrent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;

use clap::Args;
use serde_json::json;
use shoal::check::{check, PieceState};
use shoal::disk::{default_threads, Layout};
use shoal::progress::ByteProgress;
use shoal_proto::metainfo::Info;
use shoal_proto::verify::CheckedWith;

/// Check data on disk against a .torrent's piece hashes.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The .torrent file.
    pub torrent: PathBuf,
    /// The data: the file or top directory itself, or the directory that
    /// holds it under the torrent's name.
    pub path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Hashing threads [default: every core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

pub fn run(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let m = super::read_torrent(&a.torrent)?;
    if !a.path.exists() {
        anyhow::bail!("{}: no such file or directory", a.path.display());
    }
    let info = &m.info;
    let layout = Layout::for_user_path(info, &a.path);
    let counter = AtomicU64::new(0);
    let bar = ByteProgress::new(info.total_length(), "verifying");
    let started = std::time::Instant::now();
    let report = bar.follow(&counter, || {
        check(
            info,
            &layout,
            a.threads.unwrap_or_else(default_threads),
            &counter,
        )
    })?;
    let secs = started.elapsed().as_secs_f64();
    let bad = report.indices(PieceState::Bad);
    let missing = report.indices(PieceState::Missing);
    let with = match report.checked_with {
        CheckedWith::Blake3 => "blake3",
        CheckedWith::Sha1 => "sha1",
    };
    if a.json {
        let v = json!({
            "info_hash": m.info_hash.to_hex(),
            "checked_with": with,
            "pieces": info.piece_count(),
            "good": report.indices(PieceState::Good).len(),
            "bad": bad,
            "missing": missing,
            "complete": report.is_complete(),
            "seconds": secs,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(
            "checked {} pieces with {with} in {secs:.2}s ({:.2} GB/s): {} good, {} bad, {} missing",
            info.piece_count(),
            info.total_length() as f64 / secs.max(1e-9) / 1e9,
            info.piece_count() as usize - bad.len() - missing.len(),
            bad.len(),
            missing.len()
        );
        for (label, list) in [("bad", &bad), ("missing", &missing)] {
            for &i in list.iter() {
                outln!("{label} piece {i}: {}", describe(info, i));
            }
        }
    }
    Ok(if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Where a piece lies: byte range and the files it touches.
fn describe(info: &Info, i: u32) -> String {
    let start = u64::from(i) * info.piece_length;
    let files: Vec<String> = info
        .piece_extents(i)
        .iter()
        .map(|e| format!("{} @ {}", info.file_path(e.file).join("/"), e.offset))
        .collect();
    format!(
        "bytes {start}..{} in {}",
        start + info.piece_size(i),
        files.join(", ")
    )
}
