//! One torrent's run inside the manager: starting its swarm and announcer
//! in the background, watching it complete, re-checking the content and
//! running the hook when the lifecycle says so, stopping it, sampling
//! rates, and applying rate limits.
//!
//! Invariants this module keeps:
//! - A start or a watcher reports under its run's number; when the
//!   lifecycle refuses the report (a newer pause, resume or remove) it
//!   stops what it made and leaves the entry alone.
//! - The watcher learns it may proceed only after its run is installed in
//!   the entry, so a torrent that completes at once is still reported in
//!   order (downloading, verifying, seeding).
//! - Tasks hold the manager weakly: dropping the manager ends them.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use shoal_proto::lifecycle::Event;
use shoal_proto::swarm::SwarmConfig;
use shoal_proto::InfoHash;
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;

use super::view::{Counters, Limits, PeerView, TorrentDetail};
use super::{lock, Entry, Inner};
use crate::announce::{AnnounceConfig, AnnouncerHandle};
use crate::check::recheck_content;
use crate::storage::TorrentSettings;
use crate::swarm::{Mesh, Role, StartTorrent, TorrentHandle, TorrentStatus};

/// How often rates are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Bound on one announcer's `stopped`.
const ANNOUNCE_STOP: Duration = Duration::from_secs(5);

/// A running swarm and what hangs off it.
pub(crate) struct Running {
    pub(crate) handle: TorrentHandle,
    announcer: Option<AnnouncerHandle>,
    _watcher: AbortOnDropHandle<()>,
}

/// Rates over the last sample interval.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rates {
    pub(crate) down: u64,
    pub(crate) up: u64,
    last: Option<(Instant, u64, u64)>,
}

/// The swarm tunables the config sets, over proto's defaults.
fn swarm_config(cfg: &crate::config::MeshConfig) -> SwarmConfig {
    let mut c = SwarmConfig::default();
    if let Some(n) = cfg.unchoke_slots {
        c.unchoke_slots = n;
    }
    if let Some(n) = cfg.optimistic_slots {
        c.optimistic_slots = n;
    }
    if let Some(n) = cfg.thin_slots {
        c.max_thin_slots = n;
    }
    if let Some(n) = cfg.max_queue_blocks {
        c.max_queue_blocks = n;
    }
    if let Some(ms) = cfg.far_rtt_ms {
        c.far_rtt = (ms > 0).then(|| std::time::Duration::from_millis(ms));
    }
    if let Some(n) = cfg.far_partials {
        c.far_partials = n;
    }
    if let Some(m) = cfg.leecher_choking {
        c.leecher_choking = m;
    }
    c
}

/// Starts run `run` of `ih` in the background as `role`; the task is owned
/// by the entry.
pub(crate) fn spawn_start(inner: &Arc<Inner>, ih: InfoHash, run: u64, role: Role) {
    let mut entries = lock(&inner.entries);
    let Some(e) = entries.get_mut(&ih) else {
        return;
    };
    let task = tokio::spawn(start(Arc::downgrade(inner), ih, run, role));
    e.starting = Some(AbortOnDropHandle::new(task));
}

/// Tells the lifecycle that run `run` could not start.
fn start_failed(inner: &Inner, ih: InfoHash, run: u64, why: String) {
    tracing::warn!(%ih, error = %why, "torrent did not start");
    if let Some(Err(e)) = inner.feed(ih, Event::StartFailed { run, why }) {
        tracing::debug!(%ih, error = %e, "start failure dropped");
    }
}

async fn start(weak: Weak<Inner>, ih: InfoHash, run: u64, role: Role) {
    let Some(inner) = weak.upgrade() else { return };
    let Some((meta, target_dir)) = lock(&inner.entries)
        .get(&ih)
        .map(|e| (e.meta.clone(), e.target_dir.clone()))
    else {
        return;
    };
    let seed = u64::from_le_bytes(inner.node_id[..8].try_into().unwrap_or([0; 8]))
        ^ u64::from_le_bytes(ih.0[..8].try_into().unwrap_or([0; 8]));
    let started = inner
        .mesh
        .start(StartTorrent {
            metainfo: (*meta).clone(),
            target_dir,
            role,
            peers: Vec::new(),
            config: swarm_config(&inner.cfg),
            seed,
        })
        .await;
    let handle = match started {
        Ok(h) => h,
        Err(e) => return start_failed(&inner, ih, run, e.to_string()),
    };
    let status = match handle.status().await {
        Ok(s) => s,
        Err(e) => {
            inner.mesh.stop(&handle).await;
            return start_failed(&inner, ih, run, format!("stopped at start: {e}"));
        }
    };
    let announcer = spawn_announcer(&inner, &handle, &meta);
    let (go, go_rx) = oneshot::channel();
    let watcher = tokio::spawn(watch(weak.clone(), ih, run, handle.clone(), go_rx));
    let parts = Running {
        handle,
        announcer,
        _watcher: AbortOnDropHandle::new(watcher),
    };
    let started = Event::Started {
        run,
        have: status.have,
        complete: status.complete,
    };
    // Our own abort handle: dropped only after the last await, since
    // dropping it aborts this task.
    let mut me = None;
    let answer = {
        let mut entries = lock(&inner.entries);
        match entries.get_mut(&ih).map(|e| (e.life.handle(started), e)) {
            Some((Ok(cmds), e)) => {
                e.running = Some(parts);
                me = e.starting.take();
                Ok(cmds)
            }
            Some((Err(refused), _)) => Err((parts, refused.to_string())),
            None => Err((parts, "removed".to_owned())),
        }
    };
    match answer {
        Err((parts, why)) => {
            tracing::debug!(%ih, %why, "start no longer wanted");
            stop_running(&inner, ih, parts).await;
        }
        Ok(cmds) => {
            let _ = go.send(());
            tracing::info!(%ih, have = status.have, pieces = status.pieces, "torrent running");
            if let Err(e) = super::life::execute(&inner, ih, cmds, false).await {
                tracing::warn!(%ih, error = %e, "after the start");
            }
        }
    }
    drop(me);
}

fn spawn_announcer(
    inner: &Inner,
    handle: &TorrentHandle,
    meta: &shoal_proto::Metainfo,
) -> Option<AnnouncerHandle> {
    let tiers = meta.tracker_tiers();
    if tiers.iter().all(|t| t.is_empty()) && inner.gossip_trackers.is_none() {
        tracing::info!(ih = %meta.info_hash, "the torrent names no tracker");
        return None;
    }
    let mut cfg = AnnounceConfig::new(
        tiers,
        inner.listen.port(),
        inner.node_id,
        meta.info.total_length(),
        meta.info.piece_length,
    );
    // Tracker nodes learned by gossip stand in when the torrent's own
    // trackers fail, or when it names none.
    cfg.gossip_trackers = inner.gossip_trackers.clone();
    match crate::announce::start(handle.clone(), cfg) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(ih = %meta.info_hash, error = %e, "not announcing");
            None
        }
    }
}

/// Waits for the torrent to complete, then tells the lifecycle and
/// carries out what it answers (re-check, hook, or stopping a run whose
/// content failed the re-check).
async fn watch(
    weak: Weak<Inner>,
    ih: InfoHash,
    run: u64,
    handle: TorrentHandle,
    go: oneshot::Receiver<()>,
) {
    if go.await.is_err() || handle.wait_complete().await.is_err() {
        return;
    }
    let Some(inner) = weak.upgrade() else { return };
    match inner.feed(ih, Event::AllStored { run }) {
        Some(Ok(cmds)) => {
            if let Err(e) = super::life::execute(&inner, ih, cmds, false).await {
                tracing::warn!(%ih, error = %e, "after completing");
            }
        }
        Some(Err(e)) => tracing::debug!(%ih, error = %e, "completion dropped"),
        None => {}
    }
}

/// Re-checks run `run`'s whole content on disk and returns the verdict
/// for the lifecycle; `None` when the torrent is gone.
pub(crate) async fn recheck(inner: &Inner, ih: InfoHash, run: u64) -> Option<Event> {
    let (meta, dir) = lock(&inner.entries)
        .get(&ih)
        .map(|e| (e.meta.clone(), e.target_dir.clone()))?;
    tracing::info!(%ih, "download complete; re-checking the content");
    let (why, bad) = match recheck_content(meta.info.clone(), dir).await {
        Ok(r) if r.is_complete() => return Some(Event::RecheckPassed { run }),
        Ok(r) => {
            let bad = r.failed();
            (
                format!("{} pieces failed the completion re-check", bad.len()),
                bad,
            )
        }
        Err(why) => (why, Vec::new()),
    };
    tracing::error!(%ih, bad = bad.len(), "{why}");
    Some(Event::RecheckFailed { run, why, bad })
}

/// The content is complete and verified: log it and run the
/// `on_complete` hook, if the config has one.
pub(crate) async fn completed(inner: &Inner, ih: InfoHash) {
    let Some(content) = lock(&inner.entries)
        .get(&ih)
        .map(|e| e.target_dir.join(&e.meta.info.name))
    else {
        return;
    };
    tracing::info!(%ih, path = %content.display(), "torrent complete and verified");
    if let Some(cmd) = inner.cfg.on_complete.clone() {
        match crate::hook::run(&cmd, ih, &content).await {
            Ok(()) => tracing::info!(%ih, "on_complete hook done"),
            Err(e) => tracing::warn!(%ih, "on_complete hook {e}"),
        }
    }
}

/// Announces `stopped`, keeps the run's counters and stops its swarm.
/// The run's watcher is aborted last, after every await: the watcher
/// itself may be the one stopping its run (content that failed the
/// re-check).
pub(crate) async fn stop_running(inner: &Inner, ih: InfoHash, run: Running) {
    let Running {
        handle,
        announcer,
        _watcher: watcher,
    } = run;
    stop_parts(inner, ih, handle, announcer).await;
    drop(watcher);
}

async fn stop_parts(
    inner: &Inner,
    ih: InfoHash,
    handle: TorrentHandle,
    announcer: Option<AnnouncerHandle>,
) {
    if let Some(a) = announcer {
        let _ = tokio::time::timeout(ANNOUNCE_STOP, a.stop()).await;
    }
    // The count after the stop, not before: a piece may land in between.
    if let Some(s) = inner.mesh.stop(&handle).await {
        let run = Counters {
            downloaded_bytes: s.stats.downloaded,
            uploaded_bytes: s.stats.uploaded,
            pieces_verified: u64::from(s.pieces_downloaded),
            pieces_failed: u64::from(s.pieces_failed),
            peers: 0,
        };
        add_counters(&mut lock(&inner.totals), &run);
        if let Some(e) = lock(&inner.entries).get_mut(&ih) {
            add_counters(&mut e.prior, &run);
            // Refused only once removed, when the count no longer matters.
            let _ = e.life.handle(Event::Progress { have: s.have });
        }
    }
}

fn add_counters(to: &mut Counters, c: &Counters) {
    to.downloaded_bytes += c.downloaded_bytes;
    to.uploaded_bytes += c.uploaded_bytes;
    to.pieces_verified += c.pieces_verified;
    to.pieces_failed += c.pieces_failed;
}

/// The detail of an entry, with its swarm's live status when it runs.
pub(crate) fn detail(ih: InfoHash, e: &Entry, status: Option<&TorrentStatus>) -> TorrentDetail {
    let torrent = e.view(ih, status);
    let hex = |id: &[u8]| shoal_proto::infohash::hex(id);
    let (peer_list, banned) = match status {
        Some(s) => {
            let peers = s
                .peers
                .iter()
                .map(|id| {
                    let score = s.scores.iter().find(|(n, _)| n == id).map(|(_, sc)| *sc);
                    PeerView {
                        node_id: hex(id),
                        addr: s
                            .peer_addrs
                            .iter()
                            .find(|(n, _)| n == id)
                            .map(|(_, a)| a.to_string()),
                        bad_pieces: score.map_or(0.0, |sc| sc.bad_pieces),
                        banned: score.is_some_and(|sc| sc.banned),
                    }
                })
                .collect();
            (peers, s.banned.iter().map(|id| hex(id)).collect())
        }
        None => (Vec::new(), Vec::new()),
    };
    TorrentDetail {
        torrent,
        have_at_start: e.life.have_at_start(),
        pieces_downloaded: status.map_or(0, |s| s.pieces_downloaded),
        pieces_failed: status.map_or(0, |s| s.pieces_failed),
        downloaded_bytes: e.prior.downloaded_bytes + status.map_or(0, |s| s.stats.downloaded),
        uploaded_bytes: e.prior.uploaded_bytes + status.map_or(0, |s| s.stats.uploaded),
        peer_list,
        banned,
        bad_pieces: e.life.bad_pieces().to_vec(),
        trackers: e.meta.tracker_tiers(),
    }
}

/// Every second, samples each running swarm's byte counters into rates.
pub(crate) async fn sample(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let handles: Vec<_> = lock(&inner.entries)
            .iter()
            .filter_map(|(ih, e)| e.running.as_ref().map(|r| (*ih, r.handle.clone())))
            .collect();
        for (ih, h) in handles {
            let Ok(s) = h.status().await else { continue };
            let now = Instant::now();
            let mut entries = lock(&inner.entries);
            // A torrent stopped while we asked has had its last count
            // from the stop; this one may be older.
            let Some(e) = entries
                .get_mut(&ih)
                .filter(|e| e.running.as_ref().is_some_and(|r| r.handle.same_actor(&h)))
            else {
                continue;
            };
            // Refused only once removed, when the count no longer matters.
            let _ = e.life.handle(Event::Progress { have: s.have });
            let (down, up) = (s.stats.downloaded, s.stats.uploaded);
            if let Some((then, d0, u0)) = e.rates.last {
                let secs = now.duration_since(then).as_secs_f64().max(0.001);
                e.rates.down = (down.saturating_sub(d0) as f64 / secs) as u64;
                e.rates.up = (up.saturating_sub(u0) as f64 / secs) as u64;
            }
            e.rates.last = Some((now, down, up));
        }
    }
}

/// Applies node-wide limits to the endpoint's rate limiter.
pub(crate) fn apply_node_limits(mesh: &Mesh, limits: Limits) {
    mesh.endpoint()
        .rates()
        .set_node(limits.upload, limits.download);
}

/// Applies a torrent's limits to the endpoint's rate limiter.
pub(crate) fn apply_torrent_limits(mesh: &Mesh, ih: InfoHash, s: &TorrentSettings) {
    mesh.endpoint()
        .rates()
        .set_torrent(ih, s.upload_limit, s.download_limit);
}

/// Drops a removed torrent's limiter.
pub(crate) fn forget_torrent_limits(mesh: &Mesh, ih: InfoHash) {
    mesh.endpoint().rates().remove_torrent(ih);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_settings_reach_the_swarm_and_unset_ones_keep_its_defaults() {
        let mesh = crate::config::MeshConfig::default();
        assert_eq!(swarm_config(&mesh), SwarmConfig::default());
        let mesh = crate::config::MeshConfig {
            unchoke_slots: Some(3),
            optimistic_slots: Some(2),
            thin_slots: Some(0),
            max_queue_blocks: Some(9),
            far_rtt_ms: Some(25),
            far_partials: Some(5),
            leecher_choking: Some(shoal_proto::swarm::LeecherChoking::FurthestBehind),
            ..mesh
        };
        let c = swarm_config(&mesh);
        assert_eq!(
            (
                c.unchoke_slots,
                c.optimistic_slots,
                c.max_thin_slots,
                c.max_queue_blocks,
                c.far_rtt,
                c.far_partials
            ),
            (3, 2, 0, 9, Some(std::time::Duration::from_millis(25)), 5)
        );
        assert_eq!(
            c.leecher_choking,
            shoal_proto::swarm::LeecherChoking::FurthestBehind
        );
        // 0 is "every peer near", not a zero threshold.
        let off = crate::config::MeshConfig {
            far_rtt_ms: Some(0),
            ..crate::config::MeshConfig::default()
        };
        assert_eq!(swarm_config(&off).far_rtt, None);
        swarm_config(&off).validate().unwrap();
    }
}
