//! Adding a torrent by magnet link: the add is answered at once with a
//! `resolving` placeholder while a background task fetches the info
//! dictionary from peers (the link's trackers and peers, then tracker
//! nodes learned by gossip), then adds the torrent like any other.
//!
//! Invariants this module keeps:
//! - An infohash is resolving or added, and never neither between the
//!   two: the placeholder leaves the map just after the torrent enters
//!   it, under the control lock (a lookup finds the added one first). A
//!   removal under that lock either comes first, and the add then finds
//!   no placeholder and stops, or finds the added torrent.
//! - A resolution that fails stays listed as `failed` with its reason until
//!   it is removed; removing a placeholder aborts its task. The
//!   placeholder's state is its proto [`Lifecycle`], which the added
//!   torrent carries on.
//! - The task holds the manager weakly, except while it adds.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use shoal_proto::lifecycle::{Event, Lifecycle};
use shoal_proto::magnet::Magnet;
use shoal_proto::InfoHash;
use tokio_util::task::AbortOnDropHandle;

use super::view::{TorrentDetail, TorrentView};
use super::{lock, now_ms, Inner, Torrents, TorrentsError, Via};

/// Longest a magnet's metadata is looked for.
const MAGNET_TIMEOUT: Duration = Duration::from_secs(60);

/// A magnet being resolved, or that could not be.
pub(crate) struct Resolving {
    name: Option<String>,
    target_dir: PathBuf,
    trackers: Vec<String>,
    added_unix_ms: u64,
    /// Resolving, or failed with the reason.
    life: Lifecycle,
    _task: Option<AbortOnDropHandle<()>>,
}

impl Resolving {
    fn view(&self, ih: InfoHash) -> TorrentView {
        TorrentView {
            infohash: ih.to_hex(),
            name: self.name.clone().unwrap_or_default(),
            target_dir: self.target_dir.clone(),
            total_bytes: 0,
            pieces: 0,
            have: 0,
            have_bytes: 0,
            state: self.life.phase(),
            complete: false,
            download_rate: 0,
            upload_rate: 0,
            peers: 0,
            far_peers: 0,
            download_limit: None,
            upload_limit: None,
            added_unix_ms: self.added_unix_ms,
            error: self.life.error().map(str::to_owned),
        }
    }
}

impl Torrents {
    /// Registers the magnet and starts resolving it in the background.
    pub(super) async fn add_magnet(
        &self,
        link: &str,
        target_dir: PathBuf,
        paused: bool,
    ) -> Result<TorrentView, TorrentsError> {
        let magnet = Magnet::parse(link).map_err(|e| TorrentsError::BadMagnet(e.to_string()))?;
        let ih = magnet.info_hash;
        let _control = self.inner.control.lock().await;
        if lock(&self.inner.entries).contains_key(&ih)
            || lock(&self.inner.resolving).contains_key(&ih)
        {
            return Err(TorrentsError::AlreadyAdded(ih));
        }
        let placeholder = Resolving {
            name: magnet.name.clone(),
            target_dir: target_dir.clone(),
            trackers: magnet.trackers.clone(),
            added_unix_ms: now_ms(),
            life: Lifecycle::new(paused, self.inner.cfg.verify_on_complete),
            _task: None,
        };
        let view = placeholder.view(ih);
        let mut map = lock(&self.inner.resolving);
        map.insert(ih, placeholder);
        let task = tokio::spawn(resolve(Arc::downgrade(&self.inner), magnet, target_dir));
        if let Some(p) = map.get_mut(&ih) {
            p._task = Some(AbortOnDropHandle::new(task));
        }
        tracing::info!(%ih, "magnet added; fetching its metadata");
        Ok(view)
    }

    /// The detail of a resolving magnet.
    pub(super) fn resolving_detail(&self, ih: InfoHash) -> Option<TorrentDetail> {
        let map = lock(&self.inner.resolving);
        let r = map.get(&ih)?;
        Some(TorrentDetail {
            torrent: r.view(ih),
            have_at_start: 0,
            pieces_downloaded: 0,
            pieces_failed: 0,
            downloaded_bytes: 0,
            uploaded_bytes: 0,
            peer_list: Vec::new(),
            banned: Vec::new(),
            bad_pieces: Vec::new(),
            trackers: r.trackers.iter().map(|t| vec![t.clone()]).collect(),
        })
    }

    /// Drops a magnet's placeholder (aborting its resolution); returns
    /// whether there was one.
    pub(super) fn forget_resolving(&self, ih: InfoHash) -> bool {
        lock(&self.inner.resolving).remove(&ih).is_some()
    }

    /// The error for an operation on `ih`, which is not an added torrent.
    pub(super) fn missing(&self, ih: InfoHash) -> TorrentsError {
        if lock(&self.inner.resolving).contains_key(&ih) {
            TorrentsError::Conflict(format!(
                "{ih} is a magnet whose metadata is not here yet; wait for it, or remove it"
            ))
        } else {
            TorrentsError::Unknown(ih)
        }
    }
}

async fn resolve(weak: Weak<Inner>, magnet: Magnet, target_dir: PathBuf) {
    let ih = magnet.info_hash;
    let Some((mesh, gossip)) = weak.upgrade().map(|inner| {
        let t = Torrents { inner };
        (t.inner.mesh.clone(), t.gossip_trackers())
    }) else {
        return;
    };
    let result = crate::swarm::resolve_magnet(&mesh, &magnet, &gossip, MAGNET_TIMEOUT).await;
    drop(mesh);
    let Some(inner) = weak.upgrade() else { return };
    let t = Torrents { inner };
    let fail = |why: String| {
        tracing::warn!(%ih, error = %why, "magnet not added");
        if let Some(p) = lock(&t.inner.resolving).get_mut(&ih) {
            if let Err(e) = p.life.handle(Event::ResolveFailed { why }) {
                tracing::debug!(%ih, error = %e, "resolve failure dropped");
            }
        }
    };
    let meta = match result {
        Ok(m) => m,
        Err(e) => return fail(e.to_string()),
    };
    // The placeholder stays listed until `add_meta` puts the torrent in
    // its place, so the infohash never goes missing from the API (it
    // did, for the length of the add's storage write). Its abort handle
    // comes out first and is kept to the end: dropping it with the
    // placeholder would abort this task in the middle of the add.
    let (life, _task) = {
        let mut map = lock(&t.inner.resolving);
        let Some(p) = map.get_mut(&ih) else {
            return; // Removed while we were fetching.
        };
        (p.life.clone(), p._task.take())
    };
    match t.add_meta(meta, target_dir, life, Via::Magnet).await {
        Ok(_) => {}
        // Removed while the add waited for its turn: the removal wins.
        Err(TorrentsError::Unknown(_)) => {}
        Err(e) => fail(format!("metadata fetched, but the add failed: {e}")),
    }
}
