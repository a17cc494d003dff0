//! `shoal fetch`: download a torrent into a directory, re-verify every
//! piece on disk, run an optional hook, optionally keep seeding for a
//! while, then announce `stopped` and exit. Exit status 0 only if the data
//! on disk is intact; 1 if it is not or the hook failed; 2 on errors.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use shoal::swarm::{Role, TorrentHandle, TorrentStatus};

use super::peer;

/// Download a torrent.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The .torrent file, or a magnet link (its metadata is fetched from
    /// the peers its trackers and `x.pe` addresses name).
    pub torrent: String,
    /// How long to look for a magnet link's metadata, such as 90s or 5m.
    #[arg(long, value_name = "DURATION", value_parser = peer::parse_duration, default_value = "120s")]
    pub magnet_timeout: Duration,
    /// Download directory (content lands at DIR/NAME).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Keep seeding this long after the download, such as 90s, 10m or 1h.
    #[arg(long, value_name = "DURATION", value_parser = peer::parse_duration)]
    pub seed_for: Option<Duration>,
    /// Shell command to run once the data is verified, with SHOAL_INFOHASH
    /// and SHOAL_PATH in its environment.
    #[arg(long, value_name = "CMD")]
    pub on_complete: Option<String>,
    /// The node's data directory, listen address and rate limits.
    #[command(flatten)]
    pub node: peer::NodeArgs,
}

pub fn run(a: FetchArgs) -> anyhow::Result<ExitCode> {
    peer::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (meta, base) = if a.torrent.starts_with("magnet:") {
        let magnet = shoal_proto::Magnet::parse(&a.torrent).context("bad magnet link")?;
        let (meta, base) = rt.block_on(resolve(&a, &magnet))?;
        (meta, Some(base))
    } else {
        (super::read_torrent(std::path::Path::new(&a.torrent))?, None)
    };
    let tiers = peer::torrent_tiers(&meta);
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("{}: cannot create", a.output.display()))?;
    let target_dir = a
        .output
        .canonicalize()
        .with_context(|| format!("{}: cannot read", a.output.display()))?;
    let info = Arc::new(meta.info.clone());
    let ih = meta.info_hash;
    let content = target_dir.join(&info.name);
    rt.block_on(async move {
        let mut signals = Box::pin(peer::watch_signals()?);
        let running = match base {
            Some(base) => {
                base.start(meta, target_dir.clone(), Role::Leech, tiers)
                    .await?
            }
            None => peer::start(&a.node, meta, target_dir.clone(), Role::Leech, tiers).await?,
        };
        outln!("infohash {ih}");
        outln!("listening on {}", running.listen);
        let _ = std::io::stdout().flush();
        let finished = tokio::select! {
            r = download(&running.torrent, info.piece_length) => r.map(|()| true),
            _ = &mut signals => Ok(false),
        };
        let finished = match finished {
            Ok(f) => f,
            Err(e) => {
                running.stop().await;
                return Err(e);
            }
        };
        if !finished {
            running.stop().await;
            anyhow::bail!("interrupted before the download completed");
        }
        let intact = match shoal::check::recheck_content((*info).clone(), target_dir.clone()).await
        {
            Ok(r) if r.is_complete() => true,
            Ok(r) => {
                errln!(
                    "error: {} of {} pieces on disk do not match the torrent",
                    r.failed().len(),
                    r.pieces.len()
                );
                false
            }
            Err(e) => {
                errln!("error: {}: {e}", content.display());
                false
            }
        };
        let mut hook_ok = true;
        if intact {
            outln!("complete {}", content.display());
            let _ = std::io::stdout().flush();
            if let Some(cmd) = &a.on_complete {
                if let Err(e) = shoal::hook::run(cmd, ih, &content).await {
                    errln!("error: --on-complete command {e}");
                    hook_ok = false;
                }
            }
            if let Some(d) = a.seed_for {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = &mut signals => {}
                }
            }
        }
        running.stop().await;
        Ok::<_, anyhow::Error>(if intact && hook_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// Opens the node and fetches the metadata `magnet` names, within
/// `--magnet-timeout`.
async fn resolve(
    a: &FetchArgs,
    magnet: &shoal_proto::Magnet,
) -> anyhow::Result<(shoal_proto::Metainfo, peer::Base)> {
    let base = peer::open(&a.node).await?;
    errln!(
        "fetching the metadata of {} from peers (up to {:?})",
        magnet.info_hash,
        a.magnet_timeout
    );
    let meta = shoal::swarm::resolve_magnet(&base.mesh, magnet, &[], a.magnet_timeout)
        .await
        .context("cannot resolve the magnet link")?;
    Ok((meta, base))
}

/// Waits for every piece, drawing a progress line when stderr is a
/// terminal. Otherwise (a log, a test) it prints plain lines a script can
/// read: `resuming:` with the pieces storage already had verified, a
/// `progress` line a second, and `finished:` with what this run fetched
/// and which peers it banned.
async fn download(torrent: &TorrentHandle, piece_length: u64) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let first = torrent.status().await?;
    errln!(
        "resuming: {} of {} pieces already verified",
        first.have,
        first.pieces
    );
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_line = Instant::now();
    loop {
        tokio::select! {
            r = torrent.wait_complete() => {
                r?;
                if tty {
                    errln!();
                }
                let s = torrent.status().await?;
                report_finished(&s, first.have);
                return Ok(());
            }
            _ = tick.tick() => {
                if !tty {
                    if last_line.elapsed() >= Duration::from_secs(1) {
                        last_line = Instant::now();
                        let s = torrent.status().await?;
                        report_progress(&s, start.elapsed(), piece_length);
                    }
                    continue;
                }
                let s = torrent.status().await?;
                let secs = start.elapsed().as_secs_f64().max(0.001);
                let rate = u64::from(s.pieces_downloaded) as f64 * piece_length as f64 / secs;
                errp!(
                    "\r{}/{} pieces  {:.1} MiB/s  {} peers   ",
                    s.have,
                    s.pieces,
                    rate / (1 << 20) as f64,
                    s.peers.len()
                );
                let _ = std::io::stderr().flush();
            }
        }
    }
}

/// One plain progress line on stderr.
fn report_progress(s: &TorrentStatus, elapsed: Duration, piece_length: u64) {
    let rate = u64::from(s.pieces_downloaded) as f64 * piece_length as f64
        / elapsed.as_secs_f64().max(0.001);
    errln!(
        "progress have={} pieces={} downloaded={} failed={} peers={} banned={} rate={:.0}B/s",
        s.have,
        s.pieces,
        s.pieces_downloaded,
        s.pieces_failed,
        s.peers.len(),
        s.banned.len(),
        rate
    );
}

/// The summary of a finished download on stderr: what this run fetched
/// and every peer it banned, by node id.
fn report_finished(s: &TorrentStatus, resumed: u32) {
    errln!(
        "finished: downloaded={} resumed={} pieces={} failed={} banned={}",
        s.pieces_downloaded,
        resumed,
        s.pieces,
        s.pieces_failed,
        s.banned.len()
    );
    for node in &s.banned {
        let hex: String = node.iter().map(|b| format!("{b:02x}")).collect();
        errln!("banned peer {hex} (sent pieces that failed verification)");
    }
}
